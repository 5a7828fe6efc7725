import {
  buildTaskDescriptor,
  chooseC0Width,
  custodianFingerprint,
  encodeDescriptor,
  generateCustodianKeys,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  verifyCommitteeUpload,
  type TaskDescriptor,
} from '@veil/crypto';
import { describe, expect, it } from 'vitest';
import type { LocalUpdate, RoundContext } from '../middleware.js';
import { createCommitteeEncryption } from './committee.js';

function setup(overrides: Partial<TaskDescriptor> = {}) {
  const authority = generateEd25519KeyPair();
  const custodians = Array.from({ length: 5 }, () => generateCustodianKeys());
  const descriptor = {
    ...buildTaskDescriptor({
      taskId: 'task-c',
      committee: custodians.map((k, i) => ({ address: `127.0.0.1:${7100 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
      threshold: 4,
      minDevices: 10,
      maxRounds: 20,
      encoding: { weightCap: 8 },
      authorityPublicKey: authority.publicKey,
    }),
    ...overrides,
  } as TaskDescriptor;
  const signed = signDescriptor(descriptor, authority.privateKey);
  const committee = { descriptor: encodeDescriptor(descriptor), descriptorSignature: Buffer.from(signed.signature, 'base64') };
  const pins = {
    minDevices: 10,
    maxRounds: 50,
    pinnedFingerprints: custodians.map((k) => custodianFingerprint(k.signing.publicKey, k.sealing.publicKey)),
    authorityKey: Buffer.from(authority.publicKey).toString('base64'),
  };
  const deviceKey = generateEd25519KeyPair();
  const certificate = issueDeviceCertificate(authority.privateKey, { taskId: 'task-c', deviceId: 'client-1', devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 });
  return { authority, custodians, descriptor, committee, pins, deviceKey, certificate };
}

const ctx = (roundNumber = 3): RoundContext => ({ taskId: 'task-c', clientId: 'client-1', roundNumber, modelVersion: 2, maxExampleCount: 100, config: {}, signal: undefined });
const update = (): LocalUpdate => ({ delta: Float32Array.from({ length: 3000 }, (_, i) => Math.sin(i) / 2), exampleCount: 50, encoding: 'float32-le', notes: {} });

describe('committee middleware (SDK)', () => {
  it('encrypts for the committee: the coordinator intake check accepts the payload, weight capped by the descriptor', async () => {
    const s = setup();
    const enc = createCommitteeEncryption({ committee: s.committee, pins: s.pins, deviceId: 'client-1', deviceKey: s.deviceKey, certificate: s.certificate });
    expect(enc.check.maxCorruptTolerated).toBe(2);
    const out = await enc.middleware(update(), ctx(), async (u) => u);
    expect(out.encoding).toBe('committee-v1');
    expect(out.exampleCount).toBe(8);
    const verified = verifyCommitteeUpload(out.payload!, { descriptor: s.descriptor, round: 3, valueCount: 3000, deviceId: 'client-1', nowMs: Date.now() });
    expect(verified.sealedShares).toHaveLength(5);
    // Fresh secret per attempt: a second call gives other bytes.
    const again = await enc.middleware(update(), ctx(), async (u) => u);
    expect(Buffer.from(again.payload!).equals(Buffer.from(out.payload!))).toBe(false);
    // No plaintext of the update travels: the payload does not contain the float32 delta bytes.
    const deltaBytes = Buffer.from(update().delta.buffer).subarray(0, 64);
    expect(Buffer.from(out.payload!).includes(deltaBytes)).toBe(false);
  });

  it('refuses a descriptor the coordinator changed, another committee, another authority, weak parameters', () => {
    const s = setup();
    const make = (committee = s.committee, pins: typeof s.pins = s.pins) => () =>
      createCommitteeEncryption({ committee, pins, deviceId: 'client-1', deviceKey: s.deviceKey, certificate: s.certificate });
    // The coordinator lowers minDevices and keeps the old signature.
    const changed = { ...s.descriptor, minDevices: 11 };
    expect(make({ descriptor: encodeDescriptor(changed), descriptorSignature: s.committee.descriptorSignature })).toThrow(/did not sign/);
    // A committee the app did not pin.
    const other = setup();
    expect(make(other.committee)).toThrow(/authority|pinned/);
    expect(make(other.committee, { ...s.pins, authorityKey: other.pins.authorityKey })).toThrow(/pinned custodian fingerprints/);
    // Signed by the right authority but below the app's floors: minDevices, round cap, collusion bound.
    const weak = setup({ minDevices: 5, maxDevices: 1000 });
    expect(make(weak.committee, { ...weak.pins, minDevices: 10 })).toThrow(/below the floor 10/);
    const long = setup({ maxRounds: 1000 });
    expect(make(long.committee, long.pins)).toThrow(/exceeds the cap 50/);
    const collusive = setup({ corruptTolerated: 3 });
    expect(make(collusive.committee, collusive.pins)).toThrow(/2t - n - 1/);
    // A c0 width too narrow for maxDevices: 32 bits fit 10 devices of weight up to 8 at that Δ, 24 do not.
    const width = chooseC0Width(10, { weightCap: 8 });
    expect(width.c0Bits).toBe(32);
    const fits = setup({ maxDevices: 10, encoding: { ...s.descriptor.encoding, ...width } });
    expect(make(fits.committee, fits.pins)).not.toThrow();
    const narrow = setup({ maxDevices: 10, encoding: { ...s.descriptor.encoding, ...width, c0Bits: 24 } });
    expect(make(narrow.committee, narrow.pins)).toThrow(/rounding sum/);
    // Missing pins.
    expect(make(s.committee, { ...s.pins, pinnedFingerprints: [] })).toThrow(/pinned custodian fingerprints/);
    for (const fn of [make(other.committee)]) {
      try {
        fn();
      } catch (e) {
        expect((e as { code?: string }).code).toBe('failed_precondition');
      }
    }
  });

  it('refuses rounds past the cap and integer-level (distributed DP) updates', async () => {
    const s = setup();
    const enc = createCommitteeEncryption({ committee: s.committee, pins: s.pins, deviceId: 'client-1', deviceKey: s.deviceKey, certificate: s.certificate });
    await expect(enc.middleware(update(), ctx(21), async (u) => u)).rejects.toThrow(/outside the descriptor's rounds/);
    await expect(enc.middleware({ ...update(), levels: { residues: new Int32Array(4), modulus: 7 } }, ctx(), async (u) => u)).rejects.toThrow(/distributed DP/);
  });

  it('distributed DP: applies the noise the descriptor fixes; refuses a DP task that does not match the colluder allowance the app was configured with', async () => {
    const dp = { mechanism: 'distributed-discrete-gaussian' as const, clipNorm: 1, noiseMultiplier: 1.2, colludingDevices: 2, delta: 1e-5 };
    const base = setup();
    const s = setup({ dp, encoding: { ...base.descriptor.encoding, weightCap: 1, clipMaxAbs: 16 } });
    // What the coordinator announces for this descriptor: n = 10 - 2, σ = 1.2/√8 (rounded up to 12 digits), 1/γ = 1/step, d = 4096.
    const announcedDp = { scale: 8192, localStddev: 0.424264068712, minNoiseClients: 8, dimension: 4096, clipNorm: 1, noiseMultiplier: 1.2 };
    const make = (pins: Record<string, unknown>, announced: typeof announcedDp | null = announcedDp, committee = s.committee) => () =>
      createCommitteeEncryption({ committee, pins: { ...s.pins, ...pins }, deviceId: 'client-1', deviceKey: s.deviceKey, certificate: s.certificate, parameterCount: 3000, announcedDp: announced });
    expect(make({})).toThrow(/configure pins.dp/);
    expect(make({ dp: { colludingDevices: 3 } })).toThrow(/sized for 8 honest devices \(2 colluding\), the app allows for 3 colluding/);
    expect(make({ dp: { colludingDevices: 2, minNoiseMultiplier: 1.5 } })).toThrow(/noise multiplier 1.2 is below the app's floor 1.5/);
    expect(make({ dp: { colludingDevices: 2, maxClipNorm: 0.5 } })).toThrow(/clip norm 1 exceeds/);
    expect(make({ dp: { colludingDevices: 2 } }, null)).toThrow(/coordinator announces none/);
    expect(make({ dp: { colludingDevices: 2 } }, { ...announcedDp, localStddev: 0.3 })).toThrow(/announces DP noise .* other than the descriptor's/);
    expect(make({ dp: { colludingDevices: 2 } }, { ...announcedDp, minNoiseClients: 10 })).toThrow(/other than the descriptor's/);
    // An app that requires DP refuses a descriptor without it.
    expect(make({ dp: { colludingDevices: 0 } }, null, base.committee)).toThrow(/pinned|authority|requires distributed differential privacy/);
    const nodp = setup();
    expect(() =>
      createCommitteeEncryption({ committee: nodp.committee, pins: { ...nodp.pins, dp: { colludingDevices: 0 } }, deviceId: 'client-1', deviceKey: nodp.deviceKey, certificate: nodp.certificate, parameterCount: 3000 }),
    ).toThrow(/requires distributed differential privacy/);

    // An allowance the descriptor covers (fewer assumed colluders than the descriptor's 2): accepted.
    const enc = make({ dp: { colludingDevices: 1 } })();
    expect(enc.dp).toMatchObject({ noiseClients: 8, localStddev: 0.424264068712, scale: 8192, dimension: 4096 });
    const out = await enc.middleware(update(), ctx(), async (u) => u);
    // Every DP update weighs 1 and carries the padded, rotated vector (d values); nothing in the clear.
    expect(out.exampleCount).toBe(1);
    expect(out.delta).toHaveLength(0);
    const verified = verifyCommitteeUpload(out.payload!, { descriptor: s.descriptor, round: 3, valueCount: 4096, deviceId: 'client-1', nowMs: Date.now() });
    expect(verified.sealedShares).toHaveLength(5);
    expect(() => verifyCommitteeUpload(out.payload!, { descriptor: s.descriptor, round: 3, valueCount: 3000, deviceId: 'client-1', nowMs: Date.now() })).toThrow();
  });
});
