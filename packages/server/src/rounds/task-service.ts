import { randomUUID } from 'node:crypto';
import { checkHeadroom, createHeContext, CryptoError, encodeDescriptor, parseCoordinatorKeyMaterial, serializeKeyMaterial, validateDescriptor, verifyDescriptorSignature, type CoordinatorKeyMaterial, type TaskDescriptor } from '@veil/crypto';
import { float32ToBytes as encodeFloat32 } from '@veil/protocol/codec';
import { payloadError } from '../aggregation/round-aggregator.js';
import { modelBlobKey } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import { completeCommitteePrivacySettings, completeDistributedSettings } from '../privacy/settings.js';
import type { CommitteeSettings, Task, TaskEncryption, TaskSettings } from './model.js';
import { assertFinite, resolveTaskSettings, validateWeightSpecs, type TaskInput } from './task-settings.js';
import type { EngineContext } from './engine-context.js';
import { wake, type TaskRuntime, type TaskRuntimes } from './task-runtime.js';
import { calibrationRounds, resolveCalibrationSettings, totalRounds, type CalibrationInput } from './calibration.js';
import { maxRoundClients } from './privacy-budget.js';

/** Committee mode requested at task creation: the authority-signed descriptor (base64 canonical bytes, or the object). */
export interface CommitteeInput {
  descriptor: unknown;
  descriptorSignature: unknown;
}

/** Encryption requested at task creation. */
export type EncryptionInput =
  | { mode: 'none' }
  | { mode: 'bfv'; keyId?: string; coordinatorKey?: unknown };

/**
 * Task administration: creation (settings, model, strategy, encryption key or
 * committee descriptor checked before anything is written) and the task's
 * status transitions (start, pause). Starting hands the task to the round loop.
 */
export class TaskService {
  constructor(
    private readonly ctx: EngineContext,
    private readonly runtimes: TaskRuntimes,
    private readonly loop: { resume(rt: TaskRuntime): Promise<void> },
  ) {}

  async createTask(
    input: TaskInput & { encryption?: EncryptionInput; strategy?: unknown; committee?: CommitteeInput; calibration?: CalibrationInput },
    model: { topology: Record<string, unknown>; weightSpecs: unknown; weights: Float32Array },
  ): Promise<Task> {
    if (typeof input.name !== 'string' || input.name.trim() === '' || input.name.length > 200) {
      throw new VeilError('invalid_argument', 'name must be 1 to 200 characters');
    }
    const settings = resolveTaskSettings(input);
    const { specs, parameterCount } = validateWeightSpecs(model.weightSpecs);
    if (typeof model.topology !== 'object' || model.topology === null || Array.isArray(model.topology)) {
      throw new VeilError('invalid_argument', 'model.topology must be a TensorFlow.js layers topology object');
    }
    if (model.weights.length !== parameterCount) {
      throw new VeilError(
        'invalid_argument',
        `model weights have ${model.weights.length} values but weightSpecs describe ${parameterCount}`,
      );
    }
    assertFinite(model.weights, 'model weights');
    const committee = input.committee === undefined ? null : this.resolveCommittee(input.committee, input.encryption);
    const { encryption, plainModulus } =
      committee === null ? await this.resolveEncryption(input.encryption, settings) : { encryption: null, plainModulus: null };
    if (committee !== null) {
      if (input.updateBound !== undefined) throw new VeilError('invalid_argument', "updateBound applies to plaintext tasks; committee updates are clipped by the descriptor's encoding");
      // Distributed DP (KLS21) with its noise fixed by the signed descriptor (privacy/settings.ts).
      completeCommitteePrivacySettings(settings.privacy, committee.descriptor, parameterCount);
      const most = maxRoundClients(settings.selection);
      if (most === null) throw new VeilError('invalid_argument', 'committee tasks need clientsPerRound (a fixed count) so |D| stays within the descriptor');
      if (most > committee.descriptor.maxDevices) {
        throw new VeilError('invalid_argument', `clientsPerRound ${most} exceeds the descriptor's maxDevices ${committee.descriptor.maxDevices}`);
      }
      if (settings.minClients < committee.descriptor.minDevices) {
        throw new VeilError('invalid_argument', `minClients ${settings.minClients} is below the descriptor's minDevices ${committee.descriptor.minDevices}: such rounds could never be decrypted`);
      }
      if (settings.rounds > committee.descriptor.maxRounds) {
        throw new VeilError('invalid_argument', `rounds ${settings.rounds} exceeds the descriptor's maxRounds ${committee.descriptor.maxRounds}`);
      }
      if (await this.ctx.store.getTask(committee.descriptor.taskId) !== null) {
        throw new VeilError('already_exists', `task ${committee.descriptor.taskId} already exists; a descriptor names exactly one task`);
      }
      settings.updateEncoding = 'committee-v1';
      settings.updateBound = null;
      settings.committee = committee.settings;
    }
    if (encryption !== null) {
      if (input.updateBound !== undefined) {
        throw new VeilError('invalid_argument', 'updateBound applies to plaintext tasks; encrypted updates are clipped by the key\'s quantisation (clipMaxAbs)');
      }
      settings.updateEncoding = 'bfv-v1';
      settings.updateBound = null;
    }
    settings.calibration = resolveCalibrationSettings(
      input.calibration,
      { topology: model.topology, weightSpecs: specs, weights: model.weights },
      { parameterCount, privacy: settings.privacy, sharedKey: encryption !== null },
    );
    if (committee !== null && totalRounds(settings) > committee.descriptor.maxRounds) {
      throw new VeilError('invalid_argument', `rounds ${settings.rounds} and 2 calibration rounds exceed the descriptor's maxRounds ${committee.descriptor.maxRounds}`);
    }
    // DP tasks select by Poisson sampling, capped at maxCount: the most updates one sum can hold.
    if (settings.privacy !== null && committee === null && settings.selection.kind === 'poisson') {
      completeDistributedSettings(settings.privacy, { parameterCount, plainModulus, maxClients: settings.selection.maxCount });
    }
    const strategy = this.ctx.strategies.resolve(input.strategy, {
      parameterCount,
      encrypted: encryption !== null || committee !== null,
      committee: committee !== null,
      privacy: settings.privacy?.mode ?? null,
      selection: settings.selection,
      minClients: settings.minClients,
    });
    settings.strategy = { name: strategy.name, params: strategy.params };
    // A committee task's id is the one its descriptor (and every device certificate) names.
    const id = committee?.descriptor.taskId ?? randomUUID();
    const initial = encodeFloat32(model.weights);
    const ref = await this.ctx.blobs.put(modelBlobKey(id, 0), initial);
    let task: Task;
    try {
      task = await this.ctx.store.createTask({
        id,
        name: input.name.trim(),
        settings,
        modelTopology: model.topology,
        weightSpecs: specs,
        parameterCount,
        encryption,
        initialModel: { sha256: ref.sha256, sizeBytes: ref.sizeBytes, encoding: 'float32-le' },
      });
    } catch (error) {
      // No orphan blob: the initial model goes unless a task of this id exists (a repeated committee descriptor).
      if ((await this.ctx.store.getTask(id).catch(() => null)) === null) {
        await this.ctx.blobs.delete(modelBlobKey(id, 0)).catch((err) => this.ctx.log.warn({ err, taskId: id }, 'could not delete the initial model of a failed task creation'));
      }
      throw error;
    }
    const rt = this.runtimes.forTask(task);
    this.ctx.models.setCurrent(id, { version: 0, bytes: Buffer.from(initial.buffer, initial.byteOffset, initial.byteLength), encoding: 'float32-le', sha256: ref.sha256 });
    this.ctx.log.info({ taskId: id, parameterCount, rounds: settings.rounds, encrypted: encryption !== null, keyId: encryption?.keyId }, 'task created');
    return task;
  }

  /**
   * Turns the requested encryption into the task's settings, refusing secret
   * key material, keys already used by another task, and settings whose sums
   * could overflow the plaintext modulus or exhaust the noise budget.
   */
  private async resolveEncryption(
    input: EncryptionInput | undefined,
    settings: TaskSettings,
  ): Promise<{ encryption: TaskEncryption | null; plainModulus: number | null }> {
    if (input?.mode === 'none' || (input === undefined && this.ctx.defaultKey === null)) return { encryption: null, plainModulus: null };
    let material: CoordinatorKeyMaterial;
    if (input === undefined || (input.coordinatorKey === undefined && input.keyId === undefined)) {
      if (this.ctx.defaultKey === null) throw new VeilError('invalid_argument', 'encryption needs a coordinatorKey (no key is configured in VEIL_KEYS_DIR)');
      material = this.ctx.defaultKey;
    } else if (input.coordinatorKey !== undefined) {
      try {
        const bytes = Buffer.from(typeof input.coordinatorKey === 'string' ? input.coordinatorKey : JSON.stringify(input.coordinatorKey));
        material = parseCoordinatorKeyMaterial(bytes);
      } catch (error) {
        throw payloadError(error);
      }
    } else {
      if (this.ctx.defaultKey === null || this.ctx.defaultKey.keyId !== input.keyId) {
        throw new VeilError('invalid_argument', `key ${input.keyId} is not configured on this coordinator (VEIL_KEYS_DIR)`);
      }
      material = this.ctx.defaultKey;
    }
    const usedBy = await this.ctx.store.findTaskByKeyId(material.keyId);
    if (usedBy !== null) throw new VeilError('already_exists', `key ${material.keyId} already belongs to task ${usedBy}; generate a new key bundle`);
    const maxClients = maxRoundClients(settings.selection);
    if (maxClients === null) {
      throw new VeilError('invalid_argument', 'encrypted tasks need clientsPerRound (a fixed count) so the sum headroom can be checked');
    }
    const ctx = await createHeContext(material);
    const plainModulus = Number(ctx.parameters.plainModulus);
    try {
      checkHeadroom({
        plainModulus: ctx.parameters.plainModulus,
        maxClients,
        weightCap: Math.min(ctx.quantization.weightCap, settings.maxExampleCount),
        clipMaxAbs: ctx.quantization.clipMaxAbs,
        step: ctx.quantization.step,
      });
      if (maxClients > ctx.maxClients) {
        throw new VeilError(
          'invalid_argument',
          `clientsPerRound ${maxClients} exceeds the ${ctx.maxClients} updates one encrypted sum can hold with these parameters`,
        );
      }
    } catch (error) {
      throw error instanceof VeilError ? error : new VeilError('invalid_argument', (error as Error).message, { cause: error });
    } finally {
      ctx.dispose();
    }
    settings.maxExampleCount = Math.min(settings.maxExampleCount, material.quantization.weightCap);
    const encryption: TaskEncryption = {
      keyId: material.keyId,
      fingerprint: material.fingerprint,
      preset: material.preset,
      weightCap: material.quantization.weightCap,
      clipMaxAbs: material.quantization.clipMaxAbs,
      step: material.quantization.step,
      coordinatorKey: Buffer.from(serializeKeyMaterial(material)).toString('utf8'),
    };
    return { encryption, plainModulus };
  }

  /**
   * Checks a committee task's descriptor: canonical bytes, the protocol's structural and security
   * checks (validateDescriptor with the weakest floors: custodians and devices apply their own),
   * the enrolment authority's signature, and that a committee connector is configured.
   */
  private resolveCommittee(input: CommitteeInput, encryption: EncryptionInput | undefined): { descriptor: TaskDescriptor; settings: CommitteeSettings } {
    if (encryption !== undefined && encryption.mode !== 'none') throw new VeilError('invalid_argument', 'a task uses either committee aggregation or a shared key, not both');
    if (this.ctx.committeeConnector === null) {
      throw new VeilError('failed_precondition', 'committee tasks need the coordinator request key (VEIL_COMMITTEE_REQUEST_KEY) to ask custodians');
    }
    let descriptor: TaskDescriptor;
    let bytes: Uint8Array;
    try {
      descriptor = (typeof input.descriptor === 'string' ? JSON.parse(Buffer.from(input.descriptor, 'base64').toString('utf8')) : input.descriptor) as TaskDescriptor;
      bytes = encodeDescriptor(descriptor);
    } catch (error) {
      throw new VeilError('invalid_argument', `committee.descriptor is not a task descriptor: ${CryptoError.from(error).message}`);
    }
    try {
      validateDescriptor(descriptor, { minDevices: 1 });
    } catch (error) {
      throw new VeilError('invalid_argument', CryptoError.from(error).message);
    }
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(descriptor.taskId)) {
      throw new VeilError('invalid_argument', `the descriptor's taskId must be a lower-case UUID (it becomes the task's id), got ${JSON.stringify(descriptor.taskId)}`);
    }
    if (typeof input.descriptorSignature !== 'string' || !verifyDescriptorSignature({ descriptor, signature: input.descriptorSignature })) {
      throw new VeilError('invalid_argument', 'committee.descriptorSignature is not the enrolment authority\'s signature of the descriptor');
    }
    return { descriptor, settings: { descriptor: Buffer.from(bytes).toString('base64'), descriptorSignature: input.descriptorSignature } };
  }

  async startTask(taskId: string): Promise<Task> {
    const rt = await this.runtimes.load(taskId);
    return rt.mutex.run(async () => {
      const task = await this.ctx.store.setTaskStatus(taskId, 'RUNNING', ['DRAFT', 'PAUSED']);
      if (task === null) {
        throw new VeilError('failed_precondition', `task ${taskId} is ${rt.task.status} and cannot be started`);
      }
      rt.task = task;
      this.ctx.log.info({ taskId }, 'task started');
      await this.loop.resume(rt);
      return rt.task;
    });
  }

  async pauseTask(taskId: string): Promise<Task> {
    const rt = await this.runtimes.load(taskId);
    return rt.mutex.run(async () => {
      const task = await this.ctx.store.setTaskStatus(taskId, 'PAUSED', ['RUNNING']);
      if (task === null) throw new VeilError('failed_precondition', `task ${taskId} is ${rt.task.status}, not RUNNING`);
      rt.task = task;
      this.ctx.log.info({ taskId }, 'task paused');
      wake(rt);
      return task;
    });
  }

  /**
   * An admin's request to calibrate a task that was created without `calibration` (issue 16).
   * Before the task ends, the two calibration rounds then run after its last training round. Once
   * it ended with a model (COMPLETED, BUDGET_EXHAUSTED), it runs again for the two rounds after its
   * last one, on its final model, with the devices that are (still, or again) connected, and then
   * ends with the status and reason it had. Refused (`failed_precondition`) when the task already
   * calibrates, ended otherwise (FAILED, CANCELLED), a DP task's budget has no room for both rounds,
   * or a committee descriptor's `maxRounds` no room for them.
   */
  async requestCalibration(taskId: string, input: CalibrationInput): Promise<Task> {
    const rt = await this.runtimes.load(taskId);
    return rt.mutex.run(async () => {
      const task = rt.task;
      const ended = task.status === 'COMPLETED' || task.status === 'BUDGET_EXHAUSTED';
      if (!ended && task.status !== 'DRAFT' && task.status !== 'RUNNING' && task.status !== 'PAUSED') {
        throw new VeilError('failed_precondition', `task ${taskId} is ${task.status}: only a running task or one that ended with a model (COMPLETED, BUDGET_EXHAUSTED) can be calibrated`);
      }
      if (task.settings.calibration) throw new VeilError('failed_precondition', `task ${taskId} already runs calibration rounds`);
      if (input === false) throw new VeilError('invalid_argument', 'calibration must be true or an object of options');
      const settings = { ...task.settings };
      settings.calibration = resolveCalibrationSettings(
        input,
        // Only the model's structure matters here (its calibration points and size).
        { topology: task.modelTopology, weightSpecs: task.weightSpecs, weights: new Float32Array(task.parameterCount) },
        { parameterCount: task.parameterCount, privacy: settings.privacy, sharedKey: task.encryption !== null },
      );
      if (ended) {
        // The rounds after the task's last one (a budget-exhausted task may have stopped early).
        const latest = await this.ctx.store.getLatestRound(taskId);
        if (latest !== null && latest.state !== 'CLOSED' && latest.state !== 'FAILED') {
          throw new VeilError('failed_precondition', `task ${taskId} ended with round ${latest.number} ${latest.state}`);
        }
        settings.calibration = {
          ...settings.calibration!,
          firstRound: (latest?.number ?? 0) + 1,
          afterEnd: { status: task.status as 'COMPLETED' | 'BUDGET_EXHAUSTED', reason: task.statusReason ?? null },
        };
        // Both calibration rounds are charged like training rounds: refuse now if they cannot both run.
        const refusal = await this.ctx.budget.refusal({ id: taskId, settings }, settings.calibration.firstRound!, 2);
        if (refusal !== null) throw new VeilError('failed_precondition', `task ${taskId}: the two calibration rounds would spend the privacy budget (${refusal})`);
      }
      const committee = settings.committee;
      if (committee != null) {
        const descriptor = JSON.parse(Buffer.from(committee.descriptor, 'base64').toString('utf8')) as TaskDescriptor;
        if (totalRounds(settings) > descriptor.maxRounds) {
          const { range, histogram } = calibrationRounds({ rounds: settings.rounds, calibration: settings.calibration! });
          throw new VeilError('failed_precondition', `calibration rounds ${range} and ${histogram} exceed the descriptor's maxRounds ${descriptor.maxRounds}`);
        }
      }
      const updated = ended
        ? await this.ctx.store.updateTaskSettings(taskId, settings, [task.status], { to: 'RUNNING', reason: null })
        : await this.ctx.store.updateTaskSettings(taskId, settings, ['DRAFT', 'RUNNING', 'PAUSED']);
      if (updated === null) throw new VeilError('failed_precondition', `task ${taskId} changed status concurrently`);
      rt.task = updated;
      this.ctx.log.info({ taskId, points: settings.calibration!.points.length, afterEnd: ended }, 'calibration requested');
      // An ended task resumes: its next round is the range round.
      if (ended) await this.loop.resume(rt);
      return rt.task;
    });
  }

  async getTask(taskId: string): Promise<Task> {
    return (await this.runtimes.load(taskId)).task;
  }
}
