import { mkdtemp, readdir, rm, stat, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCiphertextAccumulator } from './aggregate.js';
import { createSumDecryptor } from './decrypt.js';
import { createUpdateEncryptor } from './encrypt.js';
import {
  generateKeyBundle,
  parseCoordinatorKeyMaterial,
  parseDeviceKeyMaterial,
  readCoordinatorKeyMaterial,
  readDeviceKeyMaterial,
  serializeKeyMaterial,
  writeKeyBundle,
} from './keys.js';
import type { KeyBundle } from './keys.js';
import { createHeContext, parameterFingerprint } from './params.js';

let dir: string;
let bundle: KeyBundle;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'veil-keys-'));
  bundle = await generateKeyBundle({ taskId: 'mnist-mlp', now: () => new Date('2026-01-02T03:04:05Z') });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('key bundles', () => {
  it('splits secret device material from public coordinator material', () => {
    const { device, coordinator } = bundle;
    expect(coordinator).not.toHaveProperty('secretKey');
    expect(device.secretKey.byteLength).toBeGreaterThan(1000);
    expect(coordinator).toMatchObject({
      kind: 'coordinator',
      formatVersion: 1,
      taskId: 'mnist-mlp',
      preset: 'bfv-n2048-q44-t29',
      createdAt: '2026-01-02T03:04:05.000Z',
      quantization: { clipMaxAbs: 1, step: 2 ** -13, weightCap: 128 },
    });
    expect(coordinator.keyId).toMatch(/^[0-9a-f-]{36}$/);
    expect(coordinator.fingerprint).toBe(parameterFingerprint(coordinator.encryptionParameters));
    expect(device.keyId).toBe(coordinator.keyId);
    expect(new TextDecoder().decode(serializeKeyMaterial(coordinator))).not.toContain('secretKey');
  });

  it('round-trips through bytes', () => {
    const device = parseDeviceKeyMaterial(serializeKeyMaterial(bundle.device));
    expect(device).toEqual(bundle.device);
    expect(parseCoordinatorKeyMaterial(serializeKeyMaterial(bundle.coordinator))).toEqual(bundle.coordinator);
  });

  it('refuses device bytes on the coordinator side', () => {
    expect(() => parseCoordinatorKeyMaterial(serializeKeyMaterial(bundle.device))).toThrow(
      expect.objectContaining({ code: 'secret_key_material' }),
    );
    const sneaky = JSON.parse(new TextDecoder().decode(serializeKeyMaterial(bundle.device))) as Record<string, unknown>;
    sneaky['kind'] = 'coordinator';
    expect(() => parseCoordinatorKeyMaterial(new TextEncoder().encode(JSON.stringify(sneaky)))).toThrow(
      expect.objectContaining({ code: 'secret_key_material' }),
    );
  });

  it('refuses malformed material', () => {
    expect(() => parseDeviceKeyMaterial(new TextEncoder().encode('{"format":"veil-he-key","formatVersion":2}'))).toThrow(
      expect.objectContaining({ code: 'invalid_key_material' }),
    );
    expect(() => parseCoordinatorKeyMaterial(Uint8Array.from([0xff, 0xfe]))).toThrow(
      expect.objectContaining({ code: 'invalid_key_material' }),
    );
  });

  it('writes device/ (secret, 0600) and coordinator/ (public) and reads each back', async () => {
    const out = join(dir, 'bundle');
    const paths = await writeKeyBundle(bundle, out);
    expect((await stat(paths.deviceKeyFile)).mode & 0o777).toBe(0o600);
    expect(await readdir(join(out, 'coordinator'))).toEqual(['coordinator-key.json']);
    expect(await readCoordinatorKeyMaterial(join(out, 'coordinator'))).toEqual(bundle.coordinator);
    expect(await readDeviceKeyMaterial(join(out, 'device'))).toEqual(bundle.device);
    await expect(writeKeyBundle(bundle, out)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('the coordinator loader refuses any directory holding secret material', async () => {
    const out = join(dir, 'bundle2');
    const paths = await writeKeyBundle(bundle, out);
    // The bundle root (it contains device/).
    await expect(readCoordinatorKeyMaterial(out)).rejects.toMatchObject({ code: 'secret_key_material' });
    // The device directory itself.
    await expect(readCoordinatorKeyMaterial(join(out, 'device'))).rejects.toMatchObject({ code: 'secret_key_material' });
    // A device file renamed and dropped into the coordinator directory.
    const coordinatorDir = join(out, 'coordinator');
    await copyFile(paths.deviceKeyFile, join(coordinatorDir, 'backup.json'));
    await expect(readCoordinatorKeyMaterial(coordinatorDir)).rejects.toMatchObject({ code: 'secret_key_material' });
    await rm(join(coordinatorDir, 'backup.json'));
    // A raw SEAL secret key blob.
    await writeFile(join(coordinatorDir, 'sk.bin'), bundle.device.secretKey);
    await expect(readCoordinatorKeyMaterial(coordinatorDir)).rejects.toMatchObject({ code: 'secret_key_material' });
    await rm(join(coordinatorDir, 'sk.bin'));
    expect((await readCoordinatorKeyMaterial(coordinatorDir)).keyId).toBe(bundle.coordinator.keyId);
  });

  it('keys loaded from disk encrypt, add and decrypt', async () => {
    const out = join(dir, 'bundle3');
    await writeKeyBundle(bundle, out);
    const coordinator = await readCoordinatorKeyMaterial(join(out, 'coordinator'));
    const device = await readDeviceKeyMaterial(join(out, 'device'));
    const serverCtx = await createHeContext(coordinator);
    const deviceCtx = await createHeContext(device);
    const encryptor = createUpdateEncryptor(deviceCtx, { deviceKey: device });
    const accumulator = createCiphertextAccumulator(serverCtx, { valueCount: 3 });
    const decryptor = createSumDecryptor(deviceCtx, { deviceKey: device });
    try {
      accumulator.add(encryptor.encrypt(Float32Array.from([0.5, -0.25, 1]), 2));
      accumulator.add(encryptor.encrypt(Float32Array.from([0.5, 0.75, -1]), 1));
      const sum = decryptor.decrypt(accumulator.toPayload());
      expect(Array.from(sum.levelSums)).toEqual([3 * 4096, -2 * 2048 + 6144, 8192]);
      expect(sum).toMatchObject({ totalWeight: 3, clientCount: 2 });
    } finally {
      encryptor.dispose();
      accumulator.dispose();
      decryptor.dispose();
      serverCtx.dispose();
      deviceCtx.dispose();
    }
  });
});
