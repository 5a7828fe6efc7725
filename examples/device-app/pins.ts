/**
 * The committee pins of the example device app: the JSON file given with `--committee-pins`
 * (`{"pinnedFingerprints":[...],"authorityKey":"...","minDevices":N,"dp":{...}}`), with the
 * distributed-DP allowance (`pins.dp`, issue 11) taken from flags or the environment:
 *
 * - `--committee-dp-colluding K` / `VEIL_COMMITTEE_DP_COLLUDING`: the devices the app assumes may
 *   collude with the coordinator; the SDK refuses a DP descriptor that sizes each noise share for
 *   fewer (dp.colludingDevices < K). Setting it is what lets the app join a DP committee task:
 *   without `pins.dp` the SDK refuses any descriptor with DP, and with it any descriptor without.
 * - `--committee-dp-min-noise-multiplier Z` / `VEIL_COMMITTEE_DP_MIN_NOISE_MULTIPLIER`: the
 *   smallest noise multiplier accepted.
 * - `--committee-dp-max-clip-norm C` / `VEIL_COMMITTEE_DP_MAX_CLIP_NORM`: the largest clip norm.
 *
 * A flag wins over the environment, which wins over the file's `dp`. The two floors need the
 * colluder allowance (from any of the three sources).
 */
import type { CommitteeDpPins, CommitteePins } from '@veil/client-sdk';

/** The DP allowance as given on the command line (strings, unparsed). */
export interface DpPinFlags {
  colluding?: string | undefined;
  minNoiseMultiplier?: string | undefined;
  maxClipNorm?: string | undefined;
}

export const DP_PIN_ENV = {
  colluding: 'VEIL_COMMITTEE_DP_COLLUDING',
  minNoiseMultiplier: 'VEIL_COMMITTEE_DP_MIN_NOISE_MULTIPLIER',
  maxClipNorm: 'VEIL_COMMITTEE_DP_MAX_CLIP_NORM',
} as const;

const FLAG = {
  colluding: '--committee-dp-colluding',
  minNoiseMultiplier: '--committee-dp-min-noise-multiplier',
  maxClipNorm: '--committee-dp-max-clip-norm',
} as const;

/** Parses the pins file's content and applies the DP allowance from `flags` and `env`. Throws an Error naming the bad setting. */
export function committeePinsFrom(fileText: string, flags: DpPinFlags, env: Readonly<Record<string, string | undefined>>): CommitteePins {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fileText);
  } catch (error) {
    throw new Error(`--committee-pins: not JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('--committee-pins: expected a JSON object');
  const pins = parsed as CommitteePins;
  const fileDp = pins.dp;
  if (fileDp !== undefined && (typeof fileDp !== 'object' || fileDp === null)) throw new Error('--committee-pins: dp must be an object');

  const pick = (key: keyof DpPinFlags): { text: string; source: string } | undefined => {
    const flag = flags[key];
    if (flag !== undefined) return { text: flag, source: FLAG[key] };
    const fromEnv = env[DP_PIN_ENV[key]];
    if (fromEnv !== undefined && fromEnv !== '') return { text: fromEnv, source: DP_PIN_ENV[key] };
    return undefined;
  };
  const colludingIn = pick('colluding');
  const minNoiseIn = pick('minNoiseMultiplier');
  const maxClipIn = pick('maxClipNorm');
  if (colludingIn === undefined && minNoiseIn === undefined && maxClipIn === undefined) return pins;

  const colluding = colludingIn === undefined ? fileDp?.colludingDevices : Number(colludingIn.text);
  if (colluding === undefined) {
    throw new Error(`${(minNoiseIn ?? maxClipIn)!.source} needs the colluder allowance: ${FLAG.colluding} K (or ${DP_PIN_ENV.colluding}, or dp.colludingDevices in the pins file)`);
  }
  if (!Number.isInteger(colluding) || colluding < 0) throw new Error(`${colludingIn?.source ?? 'pins dp.colludingDevices'} must be an integer >= 0, got ${colludingIn?.text ?? colluding}`);
  const positive = (input: { text: string; source: string } | undefined, fallback: number | undefined): number | undefined => {
    if (input === undefined) return fallback;
    const n = Number(input.text);
    if (!(Number.isFinite(n) && n > 0)) throw new Error(`${input.source} must be a positive number, got ${input.text}`);
    return n;
  };
  const minNoiseMultiplier = positive(minNoiseIn, fileDp?.minNoiseMultiplier);
  const maxClipNorm = positive(maxClipIn, fileDp?.maxClipNorm);
  const dp: CommitteeDpPins = {
    colludingDevices: colluding,
    ...(minNoiseMultiplier !== undefined && { minNoiseMultiplier }),
    ...(maxClipNorm !== undefined && { maxClipNorm }),
  };
  return { ...pins, dp };
}
