import { createPublicKey, verify } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { initRequestKey, readRequestSigner } from './main.js';

// RFC 8410 SubjectPublicKeyInfo prefix of a raw Ed25519 public key, to check with node:crypto directly.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

describe('readRequestSigner', () => {
  let dir = '';
  afterEach(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it("signs with the file's key: the public file's key, signatures RFC 8032 Ed25519 verifies, the same on every call", async () => {
    dir = await mkdtemp(join(tmpdir(), 'veil-request-signer-'));
    const { publicKey, secretFile } = await initRequestKey(join(dir, 'coordinator'));
    const signer = await readRequestSigner(secretFile);
    expect(Buffer.from(signer.publicKey).toString('base64')).toBe(publicKey);
    const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, Buffer.from(publicKey, 'base64')]), format: 'der', type: 'spki' });
    for (const message of [new Uint8Array(0), new TextEncoder().encode('veil/custodian-request/v1 header'), new Uint8Array(200).fill(7)]) {
      const signature = signer.sign(message);
      expect(signature).toHaveLength(64);
      expect(verify(null, message, key, signature)).toBe(true);
      // Ed25519 is deterministic: the key parsed once gives the same bytes each time.
      expect(Buffer.from(signer.sign(message)).equals(Buffer.from(signature))).toBe(true);
      const tampered = Uint8Array.from(message.length === 0 ? [0] : message.map((b, i) => (i === 0 ? b ^ 1 : b)));
      expect(verify(null, tampered, key, signature)).toBe(false);
    }
    // The secret file itself is untouched by reading it.
    expect(JSON.parse(await readFile(secretFile, 'utf8')).publicKey).toBe(publicKey);
  });
});
