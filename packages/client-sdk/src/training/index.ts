export { initTensorflow } from './backend.js';
export type { InitTensorflowOptions, TensorflowBackend, TensorflowRuntime } from './backend.js';
export { buildModel, countParameters, describeModel, flattenWeights, setFlatWeights } from './model.js';
export { evaluateLocal, trainLocal } from './train.js';
export type { EvaluateLocalOptions, EvaluateLocalResult, TrainLocalOptions, TrainLocalResult } from './train.js';
export type { LocalDataset, ModelSpec, Tf, WeightSpec } from './types.js';
