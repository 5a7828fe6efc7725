import type { Tf } from './types.js';
import { registerMissingWasmKernels } from './wasm-kernels.js';

/** Name of the TensorFlow.js backend in use, as `tf.getBackend()` reports it. */
export type TensorflowBackend = 'tensorflow' | 'webgpu' | 'webgl' | 'wasm' | 'cpu';

/** Options of {@link initTensorflow}. */
export interface InitTensorflowOptions {
  /**
   * First backend to try; the others follow in the order node → wasm → cpu in
   * Node, webgpu → webgl → wasm → cpu in a browser. `'node'` means
   * `@tensorflow/tfjs-node` (backend name `'tensorflow'`), used only if that
   * optional package resolves. Default `'node'` in Node, `'webgpu'` in a browser.
   */
  preferred?: 'node' | 'webgpu' | 'webgl' | 'wasm' | 'cpu';
  /** Receives one `'tensorflow backend selected'` record. Default: none. */
  logger?: { info(obj: object, msg: string): void };
  /**
   * Directory (or URL prefix, ending in `/`) holding the `tfjs-backend-wasm*.wasm`
   * files. Default: in Node, the `dist/` folder of the installed
   * `@tensorflow/tfjs-backend-wasm`, resolved on the filesystem (no network);
   * elsewhere, the wasm package's own default.
   */
  wasmPaths?: string;
}

/** What {@link initTensorflow} resolves to. */
export interface TensorflowRuntime {
  /** The TensorFlow.js namespace to pass to the training functions. */
  tf: Tf;
  backend: TensorflowBackend;
}

let runtime: Promise<TensorflowRuntime> | undefined;

/**
 * Loads TensorFlow.js and selects the fastest available backend:
 * `@tensorflow/tfjs-node` if it is installed, else WebAssembly, else plain JS
 * (cpu).
 *
 * Memoised: the backend is process-wide state in TF.js, so the first call
 * decides and later calls resolve to the same runtime whatever their options.
 * A failed call is not memoised.
 */
export function initTensorflow(options: InitTensorflowOptions = {}): Promise<TensorflowRuntime> {
  runtime ??= selectBackend(options).catch((error: unknown) => {
    runtime = undefined;
    throw error;
  });
  return runtime;
}

const inNode = (): boolean => typeof process !== 'undefined' && process.versions?.node !== undefined;
/** Where no GPU backend exists (Node) the GPU ones are not tried; in a browser tfjs-node is not. */
const NODE_ORDER = ['node', 'wasm', 'cpu'] as const;
const BROWSER_ORDER = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;

async function selectBackend(options: InitTensorflowOptions): Promise<TensorflowRuntime> {
  const order: readonly string[] = inNode() ? NODE_ORDER : BROWSER_ORDER;
  const preferred = options.preferred ?? order[0]!;
  const candidates = [preferred, ...order.filter((name) => name !== preferred)];
  const unavailable: string[] = [];
  for (const candidate of candidates) {
    try {
      const selected =
        candidate === 'node'
          ? await tryNode()
          : candidate === 'webgpu'
            ? await tryWebgpu()
            : candidate === 'webgl'
              ? await tryWebgl()
              : candidate === 'wasm'
                ? await tryWasm(options.wasmPaths)
                : await tryCpu();
      if (selected !== undefined) {
        options.logger?.info(
          unavailable.length > 0 ? { backend: selected.backend, unavailable } : { backend: selected.backend },
          'tensorflow backend selected',
        );
        return selected;
      }
      unavailable.push(`${candidate}: backend failed to initialise`);
    } catch (error) {
      unavailable.push(`${candidate}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  throw new Error(`no TensorFlow.js backend could be initialised (${unavailable.join('; ')})`);
}

async function tryNode(): Promise<TensorflowRuntime | undefined> {
  // A non-literal specifier keeps the optional dependency out of type-checking
  // and bundling; the import simply rejects when the package is absent.
  const specifier = '@tensorflow/tfjs-node';
  const loaded = (await import(specifier)) as { default?: unknown };
  const tf = (loaded.default ?? loaded) as Tf;
  if (!(await tf.setBackend('tensorflow'))) return undefined;
  await tf.ready();
  return { tf, backend: 'tensorflow' };
}

async function tryWasm(wasmPaths: string | undefined): Promise<TensorflowRuntime | undefined> {
  const tf = await import('@tensorflow/tfjs');
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const prefix = wasmPaths ?? (await nodeWasmDirectory());
  if (prefix !== undefined) wasm.setWasmPaths(prefix);
  // Before the backend is used: convolutional models need a filter gradient the wasm backend lacks.
  registerMissingWasmKernels(tf);
  if (!(await tf.setBackend('wasm'))) return undefined;
  await tf.ready();
  return { tf, backend: 'wasm' };
}

/** WebGPU (browsers with `navigator.gpu`): the backend package is loaded only then. */
async function tryWebgpu(): Promise<TensorflowRuntime | undefined> {
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator?.gpu === undefined) throw new Error('no navigator.gpu');
  const tf = await import('@tensorflow/tfjs');
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu'))) return undefined;
  await tf.ready();
  return { tf, backend: 'webgpu' };
}

/** WebGL (part of @tensorflow/tfjs); `setBackend` answers false where no context can be created. */
async function tryWebgl(): Promise<TensorflowRuntime | undefined> {
  const g = globalThis as { document?: unknown; OffscreenCanvas?: unknown };
  if (g.document === undefined && g.OffscreenCanvas === undefined) throw new Error('no canvas');
  const tf = await import('@tensorflow/tfjs');
  if (!(await tf.setBackend('webgl'))) return undefined;
  await tf.ready();
  return { tf, backend: 'webgl' };
}

async function tryCpu(): Promise<TensorflowRuntime | undefined> {
  const tf = await import('@tensorflow/tfjs');
  if (!(await tf.setBackend('cpu'))) return undefined;
  await tf.ready();
  return { tf, backend: 'cpu' };
}

/** `…/@tensorflow/tfjs-backend-wasm/dist/` on the filesystem, or undefined outside Node. */
async function nodeWasmDirectory(): Promise<string | undefined> {
  if (typeof process === 'undefined' || process.versions?.node === undefined) return undefined;
  const { createRequire } = await import('node:module');
  const path = await import('node:path');
  const require = createRequire(import.meta.url);
  const packageJson = require.resolve('@tensorflow/tfjs-backend-wasm/package.json');
  return path.join(path.dirname(packageJson), 'dist') + path.sep;
}
