import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import type { Task } from '../rounds/model.js';
import { modelDocument } from './model-document.js';

const base = {
  id: '00000000-0000-4000-8000-000000000002',
  modelTopology: { class_name: 'Sequential' },
  weightSpecs: [{ name: 'w', shape: [2], dtype: 'float32' as const }],
} as const;
const meta = (v: number) => ({ sha256: `h${v}`, sizeBytes: 8, encoding: v === 0 ? 'float32-le' : 'bfv-sum-v1' });

describe('modelDocument', () => {
  it('points a plaintext model.json at the version blob', () => {
    const doc = modelDocument({ ...base, encryption: null } as unknown as Task, 3, new Map([[3, { sha256: 'x', sizeBytes: 8, encoding: 'float32-le' }]]));
    expect(doc).toMatchObject({ format: 'layers-model', weightsManifest: [{ paths: ['model/weights.bin?version=3'], weights: base.weightSpecs }], veil: { version: 3, sha256: 'x', encrypted: false } });
  });

  it('lists the whole chain of an encrypted task, and refuses a gap in it', () => {
    const task = { ...base, encryption: { keyId: 'k' }, settings: { privacy: null } } as unknown as Task;
    const doc = modelDocument(task, 2, new Map([0, 1, 2].map((v) => [v, meta(v)])));
    expect(doc.veil).toMatchObject({ encrypted: true, keyId: 'k', version: 2 });
    expect((doc.veil as { chain: Array<{ version: number; sha256: string }> }).chain.map((c) => [c.version, c.sha256])).toEqual([
      [0, 'h0'],
      [1, 'h1'],
      [2, 'h2'],
    ]);
    expect(() => modelDocument(task, 2, new Map([0, 2].map((v) => [v, meta(v)])))).toThrow(VeilError);
    expect(() => modelDocument(task, 5, new Map())).toThrow(/no model version 5/);
    expect(doc.veil).not.toHaveProperty('distributedDp');
  });

  it('gives a shared-key task with distributed DP the parameters its sums decode with', () => {
    const ddg = { noiseClients: 3, scale: 1024, localStddev: 0.1, dimension: 4, modulus: 536_813_569, roundingBeta: 0.6 };
    const task = { ...base, encryption: { keyId: 'k' }, settings: { privacy: { mode: 'distributed', ddg } } } as unknown as Task;
    const doc = modelDocument(task, 1, new Map([0, 1].map((v) => [v, meta(v)])));
    expect(doc.veil).toMatchObject({ encrypted: true, distributedDp: { scale: 1024, modulus: 536_813_569, minNoiseClients: 3 } });
  });
});
