import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createClient, fitTrainingOptions } from './client.js';
import { initTensorflow } from './training/backend.js';
import { taskModelBody } from './training/task-model.js';
import type { AssignmentResponse, DownloadedModel, Transport } from './transport/transport.js';

describe("a round's fit config in local training", () => {
  it("sets FedProx's proximalMu and the local momentum, and leaves other keys to middleware", () => {
    expect(fitTrainingOptions({ proximalMu: 0.01, momentum: 0.9, tag: 'x', flag: true })).toEqual({ proximalMu: 0.01, momentum: 0.9 });
    expect(fitTrainingOptions({})).toEqual({});
  });

  it('refuses a training key of the wrong type instead of training without it', () => {
    expect(() => fitTrainingOptions({ proximalMu: '0.01' })).toThrow(/proximalMu must be a number, got string/);
    expect(() => fitTrainingOptions({ momentum: true })).toThrow(/momentum must be a number/);
  });
});

describe('models handed back to the transport', () => {
  it('releases a model once a later version replaced it and no round reads it any more, never while a round trains on it', async () => {
    const { tf } = await initTensorflow({ preferred: 'cpu' });
    const layers = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'softmax' })] });
    const body = taskModelBody(layers);
    layers.dispose();
    const initial = Buffer.from(body.weightsBase64, 'base64');
    const rounds = 4;
    // Version v: the initial weights plus v in the first value; each in memory of its own.
    const modelOf = (version: number): DownloadedModel => {
      const bytes = new Uint8Array(initial.byteLength);
      bytes.set(initial);
      new DataView(bytes.buffer).setFloat32(0, version, true);
      return { version, bytes, sha256: createHash('sha256').update(bytes).digest('hex'), encoding: 'float32-le' };
    };
    const assignment = (roundNumber: number, model: DownloadedModel): AssignmentResponse => ({
      kind: 'assignment',
      assignment: {
        roundId: `r${roundNumber}`,
        roundNumber,
        modelVersion: model.version,
        modelSha256: model.sha256,
        modelSizeBytes: model.bytes.byteLength,
        deadlineUnixMs: Date.now() + 60_000,
        training: { epochs: 1, batchSize: 4, learningRate: 0.1 },
        updateEncoding: 'float32-le',
        maxUpdateBytes: 1 << 20,
        maxExampleCount: 100,
        evaluate: false,
        config: {},
        calibration: null,
      },
    });
    const released: number[] = [];
    const handedOut = new Set<DownloadedModel>();
    const handOut = (model: DownloadedModel): DownloadedModel => (handedOut.add(model), model);
    /** For each upload: the model versions released before it (its own round's must not be among them). */
    const releasedAtUpload = new Map<number, number[]>();
    let client: ReturnType<typeof createClient> | null = null;
    const transport: Transport = {
      async join() {
        const task = { taskId: 't', name: 't', model: { topology: body.topology, weightSpecs: body.weightSpecs }, parameterCount: initial.byteLength / 4, totalRounds: rounds, encryption: null, privacy: null, committee: null };
        return { clientId: 'c', credential: 'k', task };
      },
      async getTask() {
        throw new Error('not used');
      },
      async waitForAssignment() {
        throw new Error('not used');
      },
      async waitForAssignmentAndModel(_credential, _waitMs, _signal, options) {
        const roundNumber = (options?.afterRoundNumber ?? 0) + 1;
        if (roundNumber > rounds) return { response: { kind: 'ended', taskStatus: 'TASK_STATUS_COMPLETED', reason: 'done', finalModelVersion: rounds }, model: null };
        const model = modelOf(roundNumber - 1);
        return { response: assignment(roundNumber, model), model: options?.heldModelVersion === model.version ? null : handOut(model) };
      },
      async downloadModel(_credential, which) {
        if (!('version' in which)) throw new Error('not used');
        return handOut(modelOf(which.version));
      },
      releaseModel(model) {
        expect(handedOut.delete(model)).toBe(true); // one of the transport's models, released once
        released.push(model.version);
      },
      async submitUpdate(_credential, header) {
        if (header.roundNumber === 2) {
          // The app fetches a later model while round 2 still reads version 1: version 1 is replaced
          // as the client's model, but goes back only when round 2 is done with it.
          expect((await client!.downloadModel(3)).weights[0]).toBe(3);
          expect(released).toEqual([0]);
        }
        releasedAtUpload.set(header.modelVersion, [...released]);
        return { acceptedCount: 1 };
      },
      async reportEvaluation() {},
      close() {},
    };
    const xs = new Float32Array(8 * 4).map((_, i) => (i % 5) / 5);
    const ys = new Float32Array(8 * 3).map((_, i) => (i % 3 === 0 ? 1 : 0));
    client = createClient({ coordinator: 'unused', transport, taskId: 't', credentials: { enrolmentSecret: 's' }, backend: 'cpu', pollWaitMs: 1_000 });
    await client.run({ data: { xs, ys, count: 8, inputShape: [4], numClasses: 3 } });
    // Each superseded version went back once, 1 after round 2 and 3 (fetched by the app) when round 3
    // replaced it; the last one is still the client's.
    expect(released).toEqual([0, 1, 3, 2]);
    // No round's model went back before its upload (version 3 came twice: the 3 released is the app's fetch).
    for (let v = 0; v < rounds - 1; v++) expect(releasedAtUpload.get(v)).not.toContain(v);
    expect(releasedAtUpload.get(3)).toEqual([0, 1, 3, 2]);
    // downloadModel gives the app a copy of the client's model, which stays the client's.
    expect((await client.downloadModel(rounds - 1)).weights[0]).toBe(rounds - 1);
    expect(released).toEqual([0, 1, 3, 2]);
    client.close();
  });
});
