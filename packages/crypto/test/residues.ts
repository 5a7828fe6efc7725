/** Deterministic test inputs for the committee ring code (ring.test.ts, ntt-wasm.test.ts). */
import { createCipheriv, createHash } from 'node:crypto';
import { Q } from '../src/committee/ring.js';

const QB = BigInt(Q);

/** A reproducible byte stream: AES-256-CTR keyed by SHA-256(seed), read n bytes at a time. */
export function seededBytes(seed: string): (n: number) => Uint8Array {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

/** `count` residues in [0, q) from `seed` (64-bit words reduced mod q). */
export function randomResidues(count: number, seed: string): Float64Array {
  const bytes = seededBytes(seed)(count * 8);
  const view = new DataView(bytes.buffer);
  return Float64Array.from({ length: count }, (_, i) => Number(view.getBigUint64(i * 8, true) % QB));
}
