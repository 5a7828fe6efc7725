// Shared by the grid scripts (scripts/veil-epsilon-grid.mjs, scripts/veil-ddg-grid.mjs):
// load the built @veil/privacy, read the grid from stdin, and helpers for the JSON answer.
import { readFileSync } from 'node:fs';

/** @veil/privacy as built into packages/privacy/dist; exits 2 with `buildHint` if it is not built. */
export async function loadPrivacy(buildHint) {
  const dist = new URL('../../packages/privacy/dist/index.js', import.meta.url);
  try {
    return await import(dist.href);
  } catch (err) {
    process.stderr.write(`cannot load ${dist.pathname}: build first (${buildHint})\n${String(err)}\n`);
    process.exit(2);
  }
}

/** The grid: JSON on stdin. */
export const readGrid = () => JSON.parse(readFileSync(0, 'utf8'));

/** A finite number, or null (JSON has no Infinity or NaN). */
export const num = (x) => (Number.isFinite(x) ? x : null);

/** `fn()`, or `{ error: message }` if it throws: one bad point does not stop the grid. */
export const guard = (fn) => {
  try {
    return fn();
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
};
