/**
 * Held-out accuracy of exported ONNX classifiers in onnxruntime-node, for the export tests and
 * `bench:export` (one copy instead of one per file).
 */
import * as ort from 'onnxruntime-node';

/** Held-out examples: `count` flat inputs in `xs`, one-hot labels of `classes` in `ys`. */
export interface HeldOut {
  readonly xs: Float32Array;
  readonly ys: ArrayLike<number>;
  readonly count: number;
}

/** Share of the examples whose highest output (the first, on ties) is their label's class. */
export function argmaxAccuracy(probs: Float32Array, data: HeldOut, classes = 10): number {
  let correct = 0;
  for (let i = 0; i < data.count; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (probs[i * classes + c]! > probs[i * classes + best]!) best = c;
    if (data.ys[i * classes + best] === 1) correct++;
  }
  return correct / data.count;
}

/** Accuracy of an open session's first output on `data`, fed as one batch of `inputShape` examples. */
export async function sessionAccuracy(session: ort.InferenceSession, data: HeldOut, inputShape: readonly number[] = [784]): Promise<number> {
  const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', data.xs, [data.count, ...inputShape]) });
  return argmaxAccuracy(out[session.outputNames[0]!]!.data as Float32Array, data);
}

/** Accuracy of the ONNX model `bytes` on `data`, in onnxruntime-node on one core. */
export async function onnxAccuracy(bytes: Uint8Array, data: HeldOut, inputShape: readonly number[] = [784]): Promise<number> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
  try {
    return await sessionAccuracy(session, data, inputShape);
  } finally {
    await session.release();
  }
}
