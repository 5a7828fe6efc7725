/**
 * The example device app's committee pins (examples/device-app/pins.ts): the distributed-DP
 * allowance pins.dp from its flags or environment, and what the SDK then does with a DP
 * committee descriptor (the checks of createCommitteeEncryption, run here on the pins the app
 * builds). No processes (a unit test; e2e/device-app.test.ts runs the app itself).
 */
import { describe, expect, it } from 'vitest';
import { createCommitteeEncryption } from '@veil/client-sdk';
import {
  buildTaskDescriptor,
  custodianFingerprint,
  encodeDescriptor,
  generateCustodianKeys,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  type TaskDescriptor,
} from '@veil/crypto';
import { committeePinsFrom, DP_PIN_ENV } from './pins.js';

const authority = generateEd25519KeyPair();
const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
const fileText = JSON.stringify({
  minDevices: 5,
  pinnedFingerprints: custodians.map((k) => custodianFingerprint(k.signing.publicKey, k.sealing.publicKey)),
  authorityKey: Buffer.from(authority.publicKey).toString('base64'),
});

function committeeWith(dp: TaskDescriptor['dp']) {
  const descriptor = buildTaskDescriptor({
    taskId: 'task-dp',
    committee: custodians.map((k, i) => ({ address: `127.0.0.1:${7200 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: 2,
    minDevices: 5,
    maxRounds: 10,
    encoding: { weightCap: 1, clipMaxAbs: 16 },
    authorityPublicKey: authority.publicKey,
    ...(dp !== null && { dp }),
  });
  return { descriptor: encodeDescriptor(descriptor), descriptorSignature: Buffer.from(signDescriptor(descriptor, authority.privateKey).signature, 'base64') };
}

const DP = { mechanism: 'distributed-discrete-gaussian' as const, clipNorm: 1, noiseMultiplier: 1, colludingDevices: 1, delta: 1e-5 };
// What the coordinator announces for DP: n = 5 - 1 honest shares, σ = 1/√4, 1/γ = 1/step (2^13), d = 4096 for 3000 values.
const ANNOUNCED = { scale: 8192, localStddev: 0.5, minNoiseClients: 4, dimension: 4096, clipNorm: 1, noiseMultiplier: 1 };

function join(pins: ReturnType<typeof committeePinsFrom>, dp: TaskDescriptor['dp']) {
  const deviceKey = generateEd25519KeyPair();
  return createCommitteeEncryption({
    committee: committeeWith(dp),
    pins,
    deviceId: 'client-1',
    deviceKey,
    certificate: issueDeviceCertificate(authority.privateKey, { taskId: 'task-dp', deviceId: 'client-1', devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 }),
    parameterCount: 3000,
    announcedDp: dp === null ? null : ANNOUNCED,
  });
}

describe('example device app: pins.dp for distributed-DP committee tasks', () => {
  it('without an allowance the pins file is used as is and the SDK refuses a DP committee task', () => {
    const pins = committeePinsFrom(fileText, {}, {});
    expect(pins.dp).toBeUndefined();
    expect(() => join(pins, DP)).toThrow(/configure pins.dp/);
    expect(join(pins, null).dp).toBeNull();
  });

  it('VEIL_COMMITTEE_DP_COLLUDING (or the flag) sets pins.dp: the app joins the DP task with the descriptor noise, and refuses one without DP', () => {
    const pins = committeePinsFrom(fileText, {}, { [DP_PIN_ENV.colluding]: '1' });
    expect(pins.dp).toEqual({ colludingDevices: 1 });
    expect(join(pins, DP).dp).toMatchObject({ noiseClients: 4, clipNorm: 1, scale: 8192, dimension: 4096 });
    expect(() => join(pins, null)).toThrow(/requires distributed differential privacy \(pins\.dp\), the descriptor has none/);
    const byFlag = committeePinsFrom(fileText, { colluding: '1' }, {});
    expect(join(byFlag, DP).dp).not.toBeNull();
  });

  it('a larger colluder allowance or stricter floors than the descriptor gives make the SDK refuse the task; the flag wins over the environment', () => {
    const stricter = committeePinsFrom(fileText, { colluding: '2' }, { [DP_PIN_ENV.colluding]: '1' });
    expect(stricter.dp).toEqual({ colludingDevices: 2 });
    expect(() => join(stricter, DP)).toThrow(/sized for 4 honest devices \(1 colluding\), the app allows for 2 colluding/);
    const floors = committeePinsFrom(fileText, { colluding: '1', minNoiseMultiplier: '1.5' }, { [DP_PIN_ENV.maxClipNorm]: '0.5' });
    expect(floors.dp).toEqual({ colludingDevices: 1, minNoiseMultiplier: 1.5, maxClipNorm: 0.5 });
    expect(() => join(floors, DP)).toThrow(/noise multiplier 1 is below the app's floor 1.5/);
    expect(() => join(committeePinsFrom(fileText, { colluding: '1', maxClipNorm: '0.5' }, {}), DP)).toThrow(/clip norm 1 exceeds the app's cap 0.5/);
  });

  it('the pins file may carry dp itself; the environment overrides it; bad values are refused naming the setting', () => {
    const withDp = JSON.stringify({ ...JSON.parse(fileText), dp: { colludingDevices: 1, minNoiseMultiplier: 0.5 } });
    expect(committeePinsFrom(withDp, {}, {}).dp).toEqual({ colludingDevices: 1, minNoiseMultiplier: 0.5 });
    expect(committeePinsFrom(withDp, {}, { [DP_PIN_ENV.colluding]: '3' }).dp).toEqual({ colludingDevices: 3, minNoiseMultiplier: 0.5 });
    expect(() => committeePinsFrom(fileText, { colluding: '-1' }, {})).toThrow(/--committee-dp-colluding must be an integer >= 0, got -1/);
    expect(() => committeePinsFrom(fileText, {}, { [DP_PIN_ENV.colluding]: '1.5' })).toThrow(/VEIL_COMMITTEE_DP_COLLUDING must be an integer >= 0/);
    expect(() => committeePinsFrom(fileText, { colluding: '1', maxClipNorm: 'x' }, {})).toThrow(/--committee-dp-max-clip-norm must be a positive number, got x/);
    expect(() => committeePinsFrom(fileText, { minNoiseMultiplier: '1' }, {})).toThrow(/--committee-dp-min-noise-multiplier needs the colluder allowance/);
    expect(() => committeePinsFrom('{', {}, {})).toThrow(/--committee-pins: not JSON/);
  });
});
