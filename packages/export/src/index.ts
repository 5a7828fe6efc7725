export { ExportError } from './errors.js';
export type { ExportErrorCode } from './errors.js';
export { parseModel, SUPPORTED_LAYERS } from './topology.js';
export type { Activation, ExportableModel, LayerOp, ParsedModel } from './topology.js';
export { INPUT_POINT, calibrationPoints, exportOnnx, uint8Params } from './export.js';
export type { ActivationRange, ActivationRanges, CalibrationFallback, ExportOnnxOptions, OnnxExport, Quantization } from './export.js';
export { decodeModel } from './onnx/graph.js';
export { toFloat16Bits, fromFloat16Bits } from './onnx/float16.js';
export {
  RANGE_GRID,
  chooseActivationRanges,
  createCalibrationCollector,
  klThresholdBins,
  planHistogramRound,
  meanNoiseStddev,
  noiseSwampedPoints,
  planRangeRound,
  statisticsLength,
} from './calibration.js';
export type { CalibrationCollector, CalibrationPlan, ChooseRangesOptions, PlanHistogramOptions, PointGrid, RangeMethod } from './calibration.js';
