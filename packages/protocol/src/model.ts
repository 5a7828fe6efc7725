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
