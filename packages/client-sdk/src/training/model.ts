import type { LayersModel } from '@tensorflow/tfjs';
import type { ModelSpec, Tf, WeightSpec } from './types.js';

export type { ModelSpec, WeightSpec } from './types.js';

/** Number of scalar parameters described by `weightSpecs` (the flat vector's length). */
export function countParameters(weightSpecs: readonly WeightSpec[]): number {
  let total = 0;
  for (const spec of weightSpecs) total += spec.shape.reduce((a, b) => a * b, 1);
  return total;
}

/**
 * Deserialises `spec.topology` into a TF.js layers model and loads the flat
 * `weights` into it (in `spec.weightSpecs` order).
 *
 * Throws a `RangeError` naming the mismatch when `weights.length` differs from
 * `countParameters(spec.weightSpecs)` or when the topology's weights do not
 * have the shapes listed in `spec.weightSpecs`. The caller owns the returned
 * model and must `dispose()` it.
 */
export async function buildModel(tf: Tf, spec: ModelSpec, weights: Float32Array): Promise<LayersModel> {
  const expected = countParameters(spec.weightSpecs);
  if (weights.length !== expected) {
    throw new RangeError(
      `weight vector has ${weights.length} values but the model's weightSpecs describe ${expected}`,
    );
  }
  const model = await tf.models.modelFromJSON(spec.topology as Parameters<Tf['models']['modelFromJSON']>[0]);
  try {
    const variables = model.weights;
    if (variables.length !== spec.weightSpecs.length) {
      throw new RangeError(
        `model topology has ${variables.length} weight tensors but weightSpecs lists ${spec.weightSpecs.length}`,
      );
    }
    spec.weightSpecs.forEach((weightSpec, index) => {
      const actual = variables[index]!.shape;
      if (!sameShape(actual, weightSpec.shape)) {
        throw new RangeError(
          `weight ${index} (${weightSpec.name}) has shape [${weightSpec.shape.join(',')}] in weightSpecs ` +
            `but [${actual.join(',')}] in the topology`,
        );
      }
    });
    setFlatWeights(tf, model, spec.weightSpecs, weights);
    return model;
  } catch (error) {
    model.dispose();
    throw error;
  }
}

/**
 * Loads a flat weight vector into an existing model (in `weightSpecs` order).
 * Values are copied; the caller may reuse `weights` afterwards.
 */
export function setFlatWeights(tf: Tf, model: LayersModel, weightSpecs: readonly WeightSpec[], weights: Float32Array): void {
  const tensors: ReturnType<Tf['tensor']>[] = [];
  try {
    let offset = 0;
    for (const weightSpec of weightSpecs) {
      const size = weightSpec.shape.reduce((a, b) => a * b, 1);
      // slice() copies: some backends keep a reference to the array they are given.
      tensors.push(tf.tensor(weights.slice(offset, offset + size), weightSpec.shape, 'float32'));
      offset += size;
    }
    model.setWeights(tensors);
  } finally {
    tf.dispose(tensors);
  }
}

/** The model's weights as one flat vector, in `model.getWeights()` order. */
export function flattenWeights(model: LayersModel): Float32Array {
  const variables = model.getWeights();
  let total = 0;
  for (const variable of variables) total += variable.size;
  const flat = new Float32Array(total);
  let offset = 0;
  for (const variable of variables) {
    flat.set(variable.dataSync() as Float32Array, offset);
    offset += variable.size;
  }
  return flat;
}

/** The {@link ModelSpec} of a live model: its topology and weight specs. */
export function describeModel(model: LayersModel): ModelSpec {
  return {
    topology: model.toJSON(null, false) as unknown as Record<string, unknown>,
    weightSpecs: model.weights.map((variable) => ({
      name: variable.originalName,
      shape: variable.shape.map((dim) => {
        if (dim === null) throw new RangeError(`weight ${variable.originalName} has an undefined dimension`);
        return dim;
      }),
      dtype: 'float32',
    })),
  };
}

function sameShape(a: readonly (number | null)[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((dim, i) => dim === b[i]);
}
