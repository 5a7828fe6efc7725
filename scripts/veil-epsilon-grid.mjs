#!/usr/bin/env node
// Evaluates Veil's RDP accountant (@veil/privacy, built into
// packages/privacy/dist) over a grid read as JSON on stdin, and prints JSON on
// stdout. Used by scripts/check-accountant-reference.py to compare Veil with an
// independent implementation; see docs/privacy-reference-check.md.
//
// stdin:  {"epsilon":   [[q, z, T, delta], ...],
//          "calibrate": [[targetEpsilon, delta, q, T], ...],
//          "rdp":       [[q, z], ...]}                      (each key optional)
// stdout: {"orders":    [...DEFAULT_RDP_ORDERS],
//          "epsilon":   [[epsilon, order] | {"error": msg}, ...],
//          "calibrate": [[noiseMultiplier, epsilon, order] | {"error": msg}, ...],
//          "rdp":       [[rdp at each order, one round], ...]}
// Non-finite numbers are printed as null.
//
// The numbers are those of `veil privacy epsilon` / `veil privacy calibrate`:
// both commands call computeEpsilon / calibrateNoiseMultiplier with the
// default orders (packages/privacy/src/cli.ts).
import { guard, loadPrivacy, num, readGrid } from './lib/grid-io.mjs';

const { computeEpsilon, calibrateNoiseMultiplier, computeRdp, DEFAULT_RDP_ORDERS } = await loadPrivacy('npx tsc -b packages/cli');

const input = readGrid();

const out = { orders: [...DEFAULT_RDP_ORDERS] };
if (Array.isArray(input.epsilon)) {
  out.epsilon = input.epsilon.map(([samplingRate, noiseMultiplier, rounds, delta]) =>
    guard(() => {
      const r = computeEpsilon({ samplingRate, noiseMultiplier, rounds, delta });
      return [num(r.epsilon), num(r.order)];
    }),
  );
}
if (Array.isArray(input.calibrate)) {
  out.calibrate = input.calibrate.map(([targetEpsilon, delta, samplingRate, rounds]) =>
    guard(() => {
      const r = calibrateNoiseMultiplier({ targetEpsilon, delta, samplingRate, rounds });
      return [num(r.noiseMultiplier), num(r.epsilon), num(r.order)];
    }),
  );
}
if (Array.isArray(input.rdp)) {
  out.rdp = input.rdp.map(([samplingRate, noiseMultiplier]) =>
    guard(() => Array.from(computeRdp({ samplingRate, noiseMultiplier, steps: 1 }), num)),
  );
}
process.stdout.write(`${JSON.stringify(out)}\n`);
