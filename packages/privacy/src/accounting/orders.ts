import { requireArgument } from '../errors.js';

/**
 * The default RDP orders of Google's dp_accounting `RdpAccountant`
 * (`DEFAULT_RDP_ORDERS`): 1.1, 1.2, ..., 10.9, then 11, 12, ..., 63, then
 * 128, 256, 512, 1024 — 156 orders. Fractional orders are generated as
 * `1 + x / 10` exactly as in the Python source so the doubles coincide.
 */
export const DEFAULT_RDP_ORDERS: readonly number[] = Object.freeze([
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 53 }, (_, i) => 11 + i),
  128,
  256,
  512,
  1024,
]);

/**
 * Orders for the distributed discrete Gaussian: {@link DEFAULT_RDP_ORDERS}
 * plus every integer up to 256. Its Poisson-subsampled bound (Zhu & Wang
 * 2019) is evaluated at integer orders and, at small q and large z, is
 * smallest between 64 and 127, which the defaults skip (the authors'
 * accountant, google-research/federated distributed_dp, uses the integers
 * 2..128 and 256); the union is never worse than either list.
 */
export const DDG_RDP_ORDERS: readonly number[] = Object.freeze(
  [...new Set([...DEFAULT_RDP_ORDERS, ...Array.from({ length: 255 }, (_, i) => i + 2)])].sort((x, y) => x - y),
);

/** @internal Validates an order list: non-empty, each order > 1 (Infinity allowed). */
export function resolveOrders(orders: readonly number[] | undefined): readonly number[] {
  const resolved = orders ?? DEFAULT_RDP_ORDERS;
  requireArgument(resolved.length > 0, 'orders must be a non-empty list');
  for (const order of resolved) {
    requireArgument(
      typeof order === 'number' && order > 1 && !Number.isNaN(order),
      `every RDP order must be > 1, got ${String(order)}`,
      { order },
    );
  }
  return resolved;
}
