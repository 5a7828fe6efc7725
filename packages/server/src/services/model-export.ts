import { ExportError, exportOnnx, type ActivationRanges, type CalibrationFallback, type Quantization } from '@veil/export';
import { bytesToFloat32 } from '@veil/protocol/codec';
import { VeilError } from '../errors.js';
import type { Task } from '../rounds/model.js';

/** What the export service reads: a task and one of its model versions (the round engine has both). */
export interface ModelExportPorts {
  getTask(taskId: string): Promise<Task>;
  readModelVersion(taskId: string, version: number): Promise<{ version: number; bytes: Uint8Array; encoding: string }>;
  /**
   * The activation ranges the task's calibration rounds chose for `version` and the points whose
   * statistics the DP noise swamped, or null (services/calibration-statistics.ts). Default: none.
   */
  calibratedRanges?(taskId: string, version: number): Promise<{ activationRanges: ActivationRanges; noiseSwamped: string[] } | null>;
}

/** One export request. */
export interface ModelExportRequest {
  /** `onnx` (the only format). */
  format: 'onnx';
  /** `none` (float32), `float16` or `int8`. */
  quantize: Quantization;
  /** Model version; default the task's current one. */
  version?: number;
  /**
   * int8 only: calibrated activation ranges (static quantisation). Absent: the ranges of the
   * task's own calibration rounds for this version when it has them, else dynamic quantisation.
   */
  activationRanges?: ActivationRanges;
  /**
   * int8 with the task's own ranges: write int8-static even when the DP noise swamped their
   * statistics (otherwise such an export falls back to int8-dynamic, see `fallback`). Default false.
   */
  forceStatic?: boolean;
}

/** An exported model. */
export interface ModelExportResult {
  bytes: Uint8Array;
  version: number;
  quantization: string;
  /** Where int8 static ranges came from: the request, the task's calibration rounds (`federated`), or none. */
  calibration: 'request' | 'federated' | null;
  /** Set when the task's calibrated ranges were not trusted (DP noise swamped their statistics) and int8-dynamic was written instead. */
  fallback?: CalibrationFallback;
}

export interface ModelExportService {
  exportModel(taskId: string, request: ModelExportRequest): Promise<ModelExportResult>;
}

/** ExportError codes to the coordinator's: a model it cannot translate is the task's state, not the request's. */
function toVeilError(error: unknown): VeilError {
  const e = ExportError.from(error);
  switch (e.code) {
    case 'unsupported_layer':
    case 'invalid_model':
      return new VeilError('failed_precondition', e.message, { cause: e });
    case 'invalid_calibration':
    case 'invalid_argument':
      return new VeilError('invalid_argument', e.message, { cause: e });
    default:
      return new VeilError('internal', 'model export failed', { cause: e });
  }
}

/**
 * Exports a task's global model (a plaintext task's, or an encrypted task's
 * initial version 0) as ONNX through `@veil/export`. An encrypted task's
 * versions >= 1 are ciphertext sums the coordinator cannot read: those are
 * refused with `failed_precondition`; a key holder exports them
 * (`veil export --device-key`).
 */
export function createModelExportService(ports: ModelExportPorts): ModelExportService {
  return {
    async exportModel(taskId, request) {
      if (request.format !== 'onnx') throw new VeilError('invalid_argument', `format must be onnx, not ${String(request.format)}`);
      const task = await ports.getTask(taskId);
      const version = request.version ?? task.currentModelVersion;
      if (version > task.currentModelVersion) throw new VeilError('not_found', `task has no model version ${version}`);
      const model = await ports.readModelVersion(taskId, version);
      if (model.encoding !== 'float32-le') {
        throw new VeilError(
          'failed_precondition',
          `model version ${version} of this task is an encrypted sum; only a key holder can export it (veil export --device-key DIR)`,
        );
      }
      let activationRanges = request.activationRanges;
      let noiseSwamped: string[] = [];
      let calibration: ModelExportResult['calibration'] = activationRanges === undefined ? null : 'request';
      if (activationRanges === undefined && request.quantize === 'int8' && ports.calibratedRanges !== undefined) {
        const federated = await ports.calibratedRanges(taskId, version);
        if (federated !== null) {
          ({ activationRanges, noiseSwamped } = federated);
          calibration = 'federated';
        }
      }
      try {
        const out = exportOnnx(
          { topology: task.modelTopology, weightSpecs: task.weightSpecs, weights: bytesToFloat32(model.bytes) },
          { quantize: request.quantize, ...(activationRanges !== undefined && { activationRanges, noiseSwamped, forceStatic: request.forceStatic === true }) },
        );
        return {
          bytes: out.bytes,
          version,
          quantization: out.quantization,
          calibration: request.quantize === 'int8' ? calibration : null,
          ...(out.fallback !== undefined && { fallback: out.fallback }),
        };
      } catch (error) {
        throw toVeilError(error);
      }
    },
  };
}
