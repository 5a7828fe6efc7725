#!/usr/bin/env node
// Evaluates Veil's distributed discrete Gaussian (DDG) accountant
// (@veil/privacy, built into packages/privacy/dist) over a grid read as JSON on
// stdin, and prints JSON on stdout. Used by scripts/check-ddg-reference.py to
// compare Veil with the authors' reference accounting; see
// docs/ddg-reference-check.md.
//
// A point is [clipNorm, scale, localStddev, clients, dimension, beta, q, steps, delta]
// in Veil's units (clipNorm and localStddev in update units, scale = 1/gamma,
// dimension after padding).
//
// stdin:  {"orders":  [...] | null,          extra order list (e.g. the reference's)
//          "epsilon": [point, ...],
//          "rdp":     [point, ...]}           (steps and delta ignored; one round)
// stdout: {"defaultOrders": [...DEFAULT_RDP_ORDERS],
//          "epsilon": [{"default": [eps, order], "given": [eps, order]} | {"error": msg}, ...],
//          "rdp":     [[rdp at each of `orders`, one round] | {"error": msg}, ...]}
// "given" is present only when `orders` is. Non-finite numbers print as null.
import { guard, loadPrivacy, num, readGrid } from './lib/grid-io.mjs';

const { computeDistributedDiscreteGaussianEpsilon, computeDistributedDiscreteGaussianRdp, DEFAULT_RDP_ORDERS } = await loadPrivacy('npx tsc -b packages/privacy');

const input = readGrid();
const orders = Array.isArray(input.orders) ? input.orders : null;
const params = ([clipNorm, scale, localStddev, clients, dimension, beta, samplingRate, steps, delta]) => ({
  clipNorm,
  scale,
  localStddev,
  clients,
  dimension,
  beta,
  samplingRate,
  steps,
  delta,
});

const epsilon = (input.epsilon ?? []).map((p) =>
  guard(() => {
    const base = params(p);
    const d = computeDistributedDiscreteGaussianEpsilon(base);
    const out = { default: [num(d.epsilon), num(d.order)] };
    if (orders) {
      const g = computeDistributedDiscreteGaussianEpsilon({ ...base, orders });
      out.given = [num(g.epsilon), num(g.order)];
    }
    return out;
  }),
);

const rdp = (input.rdp ?? []).map((p) =>
  guard(() => {
    const { delta: _delta, ...base } = params(p);
    return Array.from(computeDistributedDiscreteGaussianRdp({ ...base, steps: 1, orders: orders ?? undefined }), num);
  }),
);

process.stdout.write(JSON.stringify({ defaultOrders: DEFAULT_RDP_ORDERS, epsilon, rdp }));
process.stdout.write('\n');
