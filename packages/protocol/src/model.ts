/** One weight tensor of a TensorFlow.js model, in flat-vector order. */
export interface WeightSpec {
  name: string;
  shape: number[];
  dtype: 'float32';
}

/** A model as Veil moves it: TF.js layers topology plus weight specs; weights travel as one flat float32 vector. */
export interface ModelSpec {
  /** TensorFlow.js layers topology (model.json `modelTopology`). */
  topology: Record<string, unknown>;
  weightSpecs: WeightSpec[];
}

/** Number of scalar parameters described by `weightSpecs`. */
export function countParameters(weightSpecs: readonly WeightSpec[]): number {
  let total = 0;
  for (const spec of weightSpecs) total += spec.shape.reduce((a, b) => a * b, 1);
  return total;
}

/** A fit config value as devices receive it (the proto's `ConfigValue`). */
export type FitConfigValue = number | string | boolean;

/** The proto form of a fit config map (`Assignment.config`). */
export type ConfigValueMessage = { numberValue: number } | { stringValue: string } | { boolValue: boolean };

/** A fit config map as the `Assignment.config` field carries it. */
export function toConfigMessages(config: Readonly<Record<string, FitConfigValue>>): Record<string, ConfigValueMessage> {
  const out: Record<string, ConfigValueMessage> = {};
  for (const [key, value] of Object.entries(config)) {
    out[key] = typeof value === 'number' ? { numberValue: value } : typeof value === 'string' ? { stringValue: value } : { boolValue: value };
  }
  return out;
}

/** The fit config map of a received `Assignment.config` (entries without a value are dropped). */
export function fromConfigMessages(
  messages: Readonly<Record<string, { kind?: string; numberValue?: number; stringValue?: string; boolValue?: boolean }>> | undefined,
): Record<string, FitConfigValue> {
  const out: Record<string, FitConfigValue> = {};
  for (const [key, m] of Object.entries(messages ?? {})) {
    if (m.kind === 'numberValue' && typeof m.numberValue === 'number') out[key] = m.numberValue;
    else if (m.kind === 'stringValue' && typeof m.stringValue === 'string') out[key] = m.stringValue;
    else if (m.kind === 'boolValue' && typeof m.boolValue === 'boolean') out[key] = m.boolValue;
  }
  return out;
}
