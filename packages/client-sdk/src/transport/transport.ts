import type { ModelSpec } from '../training/types.js';

export interface JoinResult {
  clientId: string;
  credential: string;
  task: {
    taskId: string;
    name: string;
    model: ModelSpec;
    parameterCount: number;
    totalRounds: number;
  };
}

export interface Assignment {
  roundId: string;
  roundNumber: number;
  modelVersion: number;
  modelSha256: string;
  modelSizeBytes: number;
  deadlineUnixMs: number;
  training: { epochs: number; batchSize: number; learningRate: number };
  updateEncoding: 'float32-le';
  maxUpdateBytes: number;
  maxExampleCount: number;
  evaluate: boolean;
}

export type AssignmentResponse =
  | { kind: 'assignment'; assignment: Assignment }
  | { kind: 'idle'; taskStatus: string; currentRound: number }
  | { kind: 'ended'; taskStatus: string; reason: string; finalModelVersion: number };

export interface UpdateHeader {
  roundNumber: number;
  modelVersion: number;
  exampleCount: number;
  encoding: 'float32-le';
  /** Hex SHA-256 of the payload. */
  sha256: string;
}

/**
 * How the SDK reaches a coordinator. `createGrpcTransport` implements it over
 * grpc-js; a browser transport (gRPC-web or Connect) can implement the same
 * interface. Methods throw ClientError.
 */
export interface Transport {
  join(request: { taskId: string; enrolmentSecret: string; clientName: string }): Promise<JoinResult>;
  getTask(credential: string): Promise<JoinResult['task']>;
  waitForAssignment(credential: string, waitMs: number, signal?: AbortSignal): Promise<AssignmentResponse>;
  /** Downloads and verifies (size, SHA-256) a model version; 0 = current. */
  downloadModel(credential: string, version: number, signal?: AbortSignal): Promise<{ version: number; bytes: Uint8Array; sha256: string }>;
  submitUpdate(credential: string, header: UpdateHeader, payload: Uint8Array, signal?: AbortSignal): Promise<{ acceptedCount: number }>;
  reportEvaluation(
    credential: string,
    report: { roundNumber: number; modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<void>;
  close(): void;
}
