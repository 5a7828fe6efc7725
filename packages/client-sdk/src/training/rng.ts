import type { Rng } from '@veil/privacy';

/** In-place Fisher-Yates shuffle driven by `rng` (e.g. @veil/privacy's `createSeededRng`, reproducible per seed). */
export function shuffleInPlace(values: Uint32Array, rng: Pick<Rng, 'nextDouble'>): void {
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextDouble() * (i + 1));
    const tmp = values[i]!;
    values[i] = values[j]!;
    values[j] = tmp;
  }
}
