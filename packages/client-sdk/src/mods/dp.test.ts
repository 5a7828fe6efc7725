import {
  createCiphertextAccumulator,
  createHeContext,
  generateKeyBundle,
  readPayloadHeader,
  type HeContext,
  type KeyBundle,
} from '@veil/crypto';
import {
  createLocalPrivacyTracker,
  createSeededRng,
  decodeDistributedDiscreteGaussian,
  encodeDistributedDiscreteGaussian,
} from '@veil/privacy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError } from '../errors.js';
import { composeMiddleware, type LocalUpdate, type RoundContext } from '../middleware.js';
import {
  createDistributedDpMiddleware,
  createLocalDpMiddleware,
  rotationSeedForVersion,
  type DistributedDpOptions,
  type LocalDpState,
} from './dp.js';
import { createDeviceEncryption, type DeviceEncryption } from './encrypt.js';

const roundCtx = (roundNumber = 1): RoundContext => ({
  taskId: 'dp-test',
  clientId: 'device-1',
  roundNumber,
  modelVersion: roundNumber - 1,
  maxExampleCount: 128,
  config: {},
  signal: undefined,
});

const updateOf = (delta: Float32Array, exampleCount = 57): LocalUpdate => ({
  delta,
  exampleCount,
  encoding: 'float32-le',
  notes: {},
});

/** Runs one middleware with a `next` that records what it was given. */
async function runOne(
  middleware: (u: LocalUpdate, c: RoundContext, n: (u: LocalUpdate) => Promise<LocalUpdate>) => Promise<LocalUpdate>,
  update: LocalUpdate,
  ctx = roundCtx(),
): Promise<{ released: LocalUpdate[]; result: LocalUpdate }> {
  const released: LocalUpdate[] = [];
  const result = await middleware(update, ctx, async (u) => {
    released.push(u);
    return u;
  });
  return { released, result };
}

const l2 = (v: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += (v[i] as number) ** 2;
  return Math.sqrt(s);
};

/** Deterministic test vector with L2 norm `norm` (float64 reference, stored as float32). */
function vectorWithNorm(d: number, norm: number, seed: number): { f32: Float32Array; f64: Float64Array } {
  const rng = createSeededRng(seed);
  const raw = Float64Array.from({ length: d }, () => rng.nextDouble() * 2 - 1);
  const f32 = Float32Array.from(raw, (x) => (x * norm) / l2(raw));
  return { f32, f64: Float64Array.from(f32) };
}

async function expectClientError(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ClientError);
  expect((error as ClientError).code).toBe(code);
  expect((error as ClientError).message).toMatch(message);
}

describe('createLocalDpMiddleware (DP-FedAvg, McMahan et al. 2018)', () => {
  const base = { clipNorm: 1, noiseMultiplier: 1.1, epsilonCap: 100, delta: 1e-5 };

  it('clips the whole update to L2 norm <= C, keeps its direction, and leaves smaller updates as they are', async () => {
    // z = 1e-9 makes the noise negligible (and ε ≈ 5.5e17 per release: the cap must allow it).
    const tinyNoise = createLocalDpMiddleware({ ...base, noiseMultiplier: 1e-9, epsilonCap: 1e20, rng: createSeededRng(1) });
    const big = vectorWithNorm(1000, 7.5, 2);
    const { released } = await runOne(tinyNoise.middleware, updateOf(big.f32));
    const out = released[0]!.delta;
    // Noise stddev 1e-9 per coordinate adds at most ~1e-9·√d·6 to the norm.
    expect(l2(out)).toBeLessThanOrEqual(1 + 1e-6);
    expect(l2(out)).toBeGreaterThan(1 - 1e-6);
    for (let i = 0; i < out.length; i++) expect(out[i]).toBeCloseTo(big.f64[i]! / 7.5, 6);

    const small = vectorWithNorm(1000, 0.3, 3);
    const { released: r2 } = await runOne(tinyNoise.middleware, updateOf(small.f32));
    for (let i = 0; i < small.f32.length; i++) expect(r2[0]!.delta[i]).toBeCloseTo(small.f64[i]!, 6);
  });

  it('adds N(0, (z·C)^2) per coordinate: chi-square, mean and 1-sigma mass within 5 standard errors', async () => {
    const d = 20_000;
    const z = 1.1;
    const C = 0.5;
    const dp = createLocalDpMiddleware({ ...base, clipNorm: C, noiseMultiplier: z, rng: createSeededRng(42) });
    const input = new Float32Array(d).fill(4 / Math.sqrt(d)); // norm 4: clipped to C = 0.5
    const { released } = await runOne(dp.middleware, updateOf(input));
    const expectedClipped = C / Math.sqrt(d); // computed independently of clipToNorm
    const sigma = z * C;
    let sumSq = 0;
    let sum = 0;
    let within1 = 0;
    for (let i = 0; i < d; i++) {
      const noise = released[0]!.delta[i]! - expectedClipped;
      sum += noise;
      sumSq += (noise / sigma) ** 2;
      if (Math.abs(noise) <= sigma) within1++;
    }
    // Σ (n_i/σ)^2 ~ χ²_d: mean d, sd √(2d) = 200.
    expect(Math.abs(sumSq - d)).toBeLessThanOrEqual(5 * Math.sqrt(2 * d));
    // Sample mean ~ N(0, σ²/d).
    expect(Math.abs(sum / d)).toBeLessThanOrEqual((5 * sigma) / Math.sqrt(d));
    // P(|N| <= σ) = erf(1/√2) = 0.682689...; binomial sd √(p(1-p)/d).
    const p = 0.6826894921370859;
    expect(Math.abs(within1 / d - p)).toBeLessThanOrEqual(5 * Math.sqrt((p * (1 - p)) / d));
  });

  it('uses the CSPRNG by default (fresh noise each time), a seeded generator only when injected', async () => {
    const secure = createLocalDpMiddleware(base);
    expect(secure.cryptographicallySecureNoise).toBe(true);
    const input = new Float32Array(64);
    const a = (await runOne(secure.middleware, updateOf(input))).released[0]!.delta;
    const b = (await runOne(secure.middleware, updateOf(input))).released[0]!.delta;
    expect(Array.from(a)).not.toEqual(Array.from(b));

    const seededA = createLocalDpMiddleware({ ...base, rng: createSeededRng(9) });
    const seededB = createLocalDpMiddleware({ ...base, rng: createSeededRng(9) });
    expect(seededA.cryptographicallySecureNoise).toBe(false);
    const c = (await runOne(seededA.middleware, updateOf(input))).released[0]!.delta;
    const e = (await runOne(seededB.middleware, updateOf(input))).released[0]!.delta;
    expect(Array.from(c)).toEqual(Array.from(e));
  });

  it('releases the update with exampleCount 1 (uniform DP-FedAvg weighting) and no data-dependent notes', async () => {
    const dp = createLocalDpMiddleware({ ...base, rng: createSeededRng(5) });
    const { released } = await runOne(dp.middleware, { ...updateOf(vectorWithNorm(10, 3, 1).f32, 93), notes: { x: 1 } });
    expect(released[0]!.exampleCount).toBe(1);
    expect(released[0]!.notes).toEqual({ x: 1, dp: { mechanism: 'local-gaussian', clipNorm: 1, noiseMultiplier: 1.1 } });
  });

  it('records each participation before release and refuses, without calling next, past the cap', async () => {
    const z = 1.1;
    const delta = 1e-5;
    // The cap admits exactly 3 participations: between ε after 3 and after 4.
    const probe = createLocalPrivacyTracker({ epsilonCap: 1e9, delta });
    const eps = [1, 2, 3, 4].map(() => probe.recordParticipation(z).epsilon);
    const epsilonCap = (eps[2]! + eps[3]!) / 2;
    // Independent sanity check of the ledger: k Gaussian releases are kρ-zCDP with ρ = 1/(2z²),
    // hence (kρ + 2√(kρ ln(1/δ)), δ)-DP (Bun & Steinke 2016, Prop. 1.3); RDP conversion is no worse.
    const rho = 1 / (2 * z * z);
    eps.forEach((e, k) => expect(e).toBeLessThanOrEqual((k + 1) * rho + 2 * Math.sqrt((k + 1) * rho * Math.log(1 / delta))));

    const order: string[] = [];
    const dp = createLocalDpMiddleware({
      clipNorm: 1,
      noiseMultiplier: z,
      epsilonCap,
      delta,
      rng: createSeededRng(3),
      persist: (state) => {
        order.push(`persist ${state.participations.length}`);
      },
    });
    expect(dp.privacy).toMatchObject({ spentEpsilon: 0, participations: 0, canParticipate: true, epsilonCap, delta });
    const released: LocalUpdate[] = [];
    const next = async (u: LocalUpdate): Promise<LocalUpdate> => {
      order.push(`release ${dp.privacy.participations}`);
      released.push(u);
      return u;
    };
    for (let k = 0; k < 3; k++) await dp.middleware(updateOf(new Float32Array(8)), roundCtx(k + 1), next);
    expect(order).toEqual(['persist 1', 'release 1', 'persist 2', 'release 2', 'persist 3', 'release 3']);
    expect(dp.privacy.spentEpsilon).toBeCloseTo(eps[2]!, 10);
    expect(dp.privacy.canParticipate).toBe(false);

    await expectClientError(
      dp.middleware(updateOf(new Float32Array(8)), roundCtx(4), next),
      'failed_precondition',
      /device's own privacy budget is exhausted/,
    );
    expect(released).toHaveLength(3);
    expect(order).toHaveLength(6);
    expect(dp.privacy.participations).toBe(3);
    expect(dp.state().participations).toEqual([z, z, z]);
  });

  it('does not release the update when persisting the new state fails', async () => {
    const dp = createLocalDpMiddleware({
      ...base,
      rng: createSeededRng(4),
      persist: () => Promise.reject(new Error('disk full')),
    });
    const { released, error } = await runOne(dp.middleware, updateOf(new Float32Array(4))).then(
      (r) => ({ ...r, error: undefined }),
      (e: unknown) => ({ released: [] as LocalUpdate[], error: e }),
    );
    expect(error).toBeInstanceOf(Error);
    expect(released).toHaveLength(0);
    expect(dp.privacy.participations).toBe(1); // counted: errs on the safe side
  });

  it('restores the ledger from saved state, so a restart does not reset the budget', async () => {
    const z = 2;
    const probe = createLocalPrivacyTracker({ epsilonCap: 1e9, delta: 1e-6 });
    const eps = [1, 2, 3].map(() => probe.recordParticipation(z).epsilon);
    const options = { clipNorm: 1, noiseMultiplier: z, epsilonCap: (eps[1]! + eps[2]!) / 2, delta: 1e-6 };
    const first = createLocalDpMiddleware({ ...options, rng: createSeededRng(1) });
    await runOne(first.middleware, updateOf(new Float32Array(4)));
    const saved = JSON.parse(JSON.stringify(first.state())) as LocalDpState;
    expect(saved).toEqual({ version: 1, participations: [2] });

    const restarted = createLocalDpMiddleware({ ...options, rng: createSeededRng(2), restore: saved });
    expect(restarted.privacy.participations).toBe(1);
    expect(restarted.privacy.spentEpsilon).toBeCloseTo(eps[0]!, 12);
    await runOne(restarted.middleware, updateOf(new Float32Array(4))); // the 2nd, within the cap
    await expectClientError(runOne(restarted.middleware, updateOf(new Float32Array(4))), 'failed_precondition', /budget is exhausted/);

    // Without the saved state the budget would have allowed two more.
    expect(createLocalDpMiddleware(options).privacy.participations).toBe(0);
  });

  it('validates its options once, at construction', () => {
    expect(() => createLocalDpMiddleware({ ...base, clipNorm: 0 })).toThrowError(/clipNorm/);
    expect(() => createLocalDpMiddleware({ ...base, noiseMultiplier: Number.NaN })).toThrowError(/noiseMultiplier/);
    expect(() => createLocalDpMiddleware({ ...base, delta: 1 })).toThrowError(/delta/);
    expect(() => createLocalDpMiddleware({ ...base, restore: { version: 1, participations: [-1] } })).toThrowError(ClientError);
    const tracker = createLocalPrivacyTracker({ epsilonCap: 5, delta: 1e-5 });
    expect(() => createLocalDpMiddleware({ ...base, tracker })).toThrowError(/cap/);
    expect(() =>
      createLocalDpMiddleware({ ...base, epsilonCap: 5, tracker, restore: { version: 1, participations: [] } }),
    ).toThrowError(/either tracker or restore/);
  });
});

describe('createDistributedDpMiddleware (distributed discrete Gaussian, Kairouz, Liu & Steinke 2021) with real BFV', () => {
  const D = 6000; // padded to 8192 = 4 ciphertexts of 2048 slots
  const PADDED = 8192;
  const N = 5;
  let bundle: KeyBundle;
  let coordinator: HeContext;
  let devices: DeviceEncryption[];
  let t: number;

  beforeAll(async () => {
    bundle = await generateKeyBundle({ taskId: 'dp-ddg-test' });
    coordinator = await createHeContext(bundle.coordinator); // public material only, as the coordinator
    devices = await Promise.all(Array.from({ length: N }, () => createDeviceEncryption(bundle.device)));
    t = devices[0]!.plainModulus;
  });
  afterAll(() => {
    for (const d of devices) d.dispose();
    coordinator.dispose();
  });

  /** 5 devices' updates; norms 0.4 .. 3 (most clipped to c = 1). */
  const updates = Array.from({ length: N }, (_, k) => vectorWithNorm(D, [0.4, 1.5, 3, 0.9, 2][k]!, 100 + k));
  /** Plain mean of the clipped updates, computed independently in float64. */
  const clippedMean = (clipNorm: number): Float64Array => {
    const mean = new Float64Array(D);
    for (const { f64 } of updates) {
      const factor = Math.min(1, clipNorm / l2(f64));
      for (let i = 0; i < D; i++) mean[i]! += (f64[i]! * factor) / N;
    }
    return mean;
  };

  /** Each device: DDG middleware then its encryption step; the coordinator sums; a key holder applies the sum. */
  async function runRound(options: Omit<DistributedDpOptions, 'rng' | 'modulus'>, seedBase: number) {
    const accumulator = createCiphertextAccumulator(coordinator, { valueCount: PADDED });
    const payloads: Uint8Array[] = [];
    try {
      for (let k = 0; k < N; k++) {
        const ddg = createDistributedDpMiddleware({ ...options, modulus: t, rng: createSeededRng(seedBase + k) });
        const chain = composeMiddleware([ddg.middleware, devices[k]!.middleware], async (u) => u);
        const out = await chain(updateOf(updates[k]!.f32), roundCtx());
        expect(out).toMatchObject({ encoding: 'bfv-v1', exampleCount: 1 });
        expect(out.delta).toHaveLength(0); // no plaintext update left
        expect(readPayloadHeader(out.payload!)).toMatchObject({ valueCount: PADDED, totalWeight: 1, clientCount: 1 });
        payloads.push(out.payload!);
        accumulator.add(out.payload!);
      }
      const sum = accumulator.toPayload();
      const rotationSeed = typeof options.rotationSeed === 'number' ? options.rotationSeed : options.rotationSeed(roundCtx());
      const weights = devices[0]!.applyDistributedDpSum(new Float32Array(D), sum, {
        scale: options.scale,
        modulus: t,
        rotationSeed,
        minClients: N,
      });
      return { weights, payloads, sum, rotationSeed };
    } finally {
      accumulator.dispose();
    }
  }

  it('tiny noise: the decrypted mean equals the plain mod-m pipeline exactly and the clipped mean within the rounding bound', async () => {
    const options = { clipNorm: 1, scale: 4096, localStddev: 1e-5, rotationSeed: rotationSeedForVersion('dp-test', 1) };
    const { weights, payloads } = await runRound(options, 200);

    // Exactness: re-run the same encodings (same seeds) and sum the residues mod m in plain
    // arithmetic; the BFV path must give the same decoded mean, to float32 rounding.
    const modularSum = new Float64Array(PADDED);
    for (let k = 0; k < N; k++) {
      const { encoded } = encodeDistributedDiscreteGaussian(updates[k]!.f32, { ...options, modulus: t, rng: createSeededRng(200 + k) });
      for (let i = 0; i < PADDED; i++) modularSum[i] = (modularSum[i]! + encoded[i]!) % t;
    }
    const plain = decodeDistributedDiscreteGaussian(modularSum, { scale: 4096, modulus: t, originalDimension: D, rotationSeed: options.rotationSeed });
    for (let i = 0; i < D; i++) expect(weights[i]).toBe(Math.fround(plain[i]! / N));

    // Accuracy: σ_z = 1e-5·4096 ≈ 0.04, so P(a noise draw is nonzero) ≈ 2·exp(-1/(2σ_z²)) < 1e-270:
    // the error is rounding only. Each device's rounding error is < 1 per rotated coordinate, so
    // ‖Σ e‖₂ < N·√d and the mean's error is < √d / scale after the (orthonormal) inverse rotation.
    const mean = clippedMean(1);
    const err = Float64Array.from(weights, (w, i) => w - mean[i]!);
    const bound = Math.sqrt(PADDED) / 4096 + 1e-6; // + float32 storage of the result
    expect(l2(err)).toBeLessThanOrEqual(bound);
    // Sharper, in expectation: randomized rounding is unbiased with variance <= 1/4 per coordinate
    // (KLS21 Sec. 4.1), so E‖err‖² <= d/(4·N·scale²); allow 50% over it (observed about half of it).
    expect(l2(err) ** 2).toBeLessThanOrEqual((1.5 * PADDED) / (4 * N * 4096 ** 2));
    expect(l2(err) / l2(mean)).toBeLessThan(0.1);
    // Reported figure: bytes per value of one device's upload.
    console.info(
      `distributed DP upload: ${payloads[0]!.byteLength} bytes for ${D} weights (padded ${PADDED}): ` +
        `${(payloads[0]!.byteLength / PADDED).toFixed(3)} bytes/padded value, ${(payloads[0]!.byteLength / D).toFixed(3)} bytes/weight`,
    );
  });

  it('real noise: the error of the mean has mean 0 and variance (σ_z² + rounding)/(n·scale²) per coordinate', async () => {
    const scale = 4096;
    const sigmaZ = 16;
    const options = { clipNorm: 1, scale, localStddev: sigmaZ / scale, rotationSeed: (c: RoundContext) => rotationSeedForVersion(c.taskId, c.modelVersion + 1), maxClients: N };
    const { weights } = await runRound(options, 300);
    const mean = clippedMean(1);
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < D; i++) {
      const e = weights[i]! - mean[i]!;
      s += e;
      s2 += e * e;
    }
    const sampleMean = s / D;
    const sampleVar = s2 / D - sampleMean ** 2;
    // Per rotated coordinate the sum carries N discrete Gaussians (variance <= σ_z², and > σ_z²·(1 − 1e-100)
    // at σ_z = 16, CKS20 Prop. 19) and N rounding errors (variance in [0, 1/4]); the orthonormal inverse
    // rotation keeps the per-coordinate variance. Mean of N: divide by N² · scale².
    const vLow = (N * sigmaZ ** 2) / (N * N * scale * scale);
    const vHigh = (N * (sigmaZ ** 2 + 0.25)) / (N * N * scale * scale);
    const rel = 6 * Math.sqrt(2 / D); // 6 standard errors of a sample variance
    expect(sampleVar).toBeGreaterThanOrEqual(vLow * (1 - rel));
    expect(sampleVar).toBeLessThanOrEqual(vHigh * (1 + rel));
    expect(Math.abs(sampleMean)).toBeLessThanOrEqual(6 * Math.sqrt(vHigh / D));
  });

  it('refuses a modulus other than the BFV plain modulus, before encrypting and when decoding', async () => {
    const wrong = 2 ** 31;
    const ddg = createDistributedDpMiddleware({ clipNorm: 1, scale: 64, localStddev: 0.1, modulus: wrong, rotationSeed: 7 });
    const chain = composeMiddleware([ddg.middleware, devices[0]!.middleware], async (u) => u);
    await expectClientError(chain(updateOf(updates[0]!.f32), roundCtx()), 'failed_precondition', /must be equal/);
    const { sum } = await runRound({ clipNorm: 1, scale: 64, localStddev: 0.1, rotationSeed: 7 }, 400);
    expect(() => devices[0]!.applyDistributedDpSum(new Float32Array(D), sum, { scale: 64, modulus: wrong, rotationSeed: 7 })).toThrowError(
      /must be equal/,
    );
    expect(() =>
      devices[0]!.applyDistributedDpSum(new Float32Array(D), sum, { scale: 64, modulus: t, rotationSeed: 7, minClients: N + 1 }),
    ).toThrowError(/fewer than/);
    expect(() => devices[0]!.applyDistributedDpSum(new Float32Array(100), sum, { scale: 64, modulus: t, rotationSeed: 7 })).toThrowError(
      /holds 8192 values/,
    );
  });

  it('refuses, without releasing anything, when a sum of maxClients updates could wrap around m', async () => {
    const ddg = createDistributedDpMiddleware({ clipNorm: 1, scale: 2 ** 20, localStddev: 1e-3, modulus: t, rotationSeed: 1, maxClients: 10_000 });
    const { released, error } = await runOne(ddg.middleware, updateOf(updates[0]!.f32)).then(
      (r) => ({ ...r, error: undefined }),
      (e: unknown) => ({ released: [] as LocalUpdate[], error: e }),
    );
    expect(released).toHaveLength(0);
    expect(error).toBeInstanceOf(ClientError);
    expect((error as ClientError).code).toBe('failed_precondition');
  });

  it('uses the CSPRNG by default and validates its options', () => {
    const base = { clipNorm: 1, scale: 64, localStddev: 0.1, modulus: t, rotationSeed: 1 };
    expect(createDistributedDpMiddleware(base).cryptographicallySecureNoise).toBe(true);
    expect(() => createDistributedDpMiddleware({ ...base, modulus: 2 ** 32 })).toThrowError(/modulus/);
    expect(() => createDistributedDpMiddleware({ ...base, rotationSeed: -1 })).toThrowError(/rotationSeed/);
    expect(() => createDistributedDpMiddleware({ ...base, localStddev: 0 })).toThrowError(/localStddev/);
  });
});
