import { readFile } from 'node:fs/promises';
import { findPackageJSON } from 'node:module';
import { pathToFileURL } from 'node:url';
import SEAL from 'node-seal';
import type { MainModule } from 'node-seal';
import { CryptoError, describeThrown } from './errors.js';
import type { CryptoErrorCode } from './errors.js';

/** The node-seal 7 runtime: raw Microsoft SEAL 4.1 bindings compiled to WebAssembly. */
export type SealModule = MainModule;

/** Figures about the shared node-seal runtime of this process. */
export interface SealRuntimeStats {
  /** Time to compile and instantiate the WebAssembly module, in ms (undefined before `loadSeal()` resolved). */
  readonly initMs: number | undefined;
  /**
   * Whether failed SEAL calls restore the WebAssembly stack pointer (see {@link callSeal}).
   * False only if node-seal's glue code changed shape and the stack functions were not found.
   */
  readonly stackGuard: boolean;
  /**
   * Current size of the WebAssembly linear memory, in bytes (undefined when unknown). The memory
   * only ever grows, so a value that keeps rising across identical iterations means a leak.
   */
  readonly heapBytes: number | undefined;
}

// The project's `lib` has no WebAssembly declarations; this is the part used here.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  instantiate(bytes: Uint8Array, imports: unknown): Promise<{ instance: { exports: Record<string, unknown> }; module: unknown }>;
  readonly Memory: abstract new (...args: never[]) => WasmMemory;
  readonly Exception?: abstract new (...args: never[]) => object;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let pending: Promise<SealModule> | undefined;
let initMs: number | undefined;
let memory: WasmMemory | undefined;
let stack: { current(): number; restore(pointer: number): void } | undefined;

/**
 * Loads node-seal once per process and shares it (memoised; concurrent callers get the same
 * promise). The module is WebAssembly and asynchronous to initialise (about 150 ms, measured).
 * Throws `CryptoError('seal_unavailable')` when it cannot load (node-seal 7 needs Node >= 22).
 */
export function loadSeal(): Promise<SealModule> {
  pending ??= instantiate().catch((reason: unknown) => {
    pending = undefined;
    throw new CryptoError('seal_unavailable', `node-seal failed to load: ${describeThrown(reason)}`, {
      cause: reason,
    });
  });
  return pending;
}

/** Init time and heap size of the shared node-seal runtime (see {@link SealRuntimeStats}). */
export function sealRuntimeStats(): SealRuntimeStats {
  return { initMs, stackGuard: stack !== undefined, heapBytes: memory?.buffer.byteLength };
}

async function instantiate(): Promise<SealModule> {
  const started = performance.now();
  const files = await readSealFiles();
  const wasmBytes = files?.wasm;
  let seal: SealModule;
  if (wasmBytes === undefined) {
    seal = await SEAL();
  } else {
    // Instantiating the module ourselves (Emscripten's documented `instantiateWasm` hook) is the
    // only way to reach its linear memory, which the leak checks measure.
    seal = await new Promise<SealModule>((resolve, reject) => {
      SEAL({
        instantiateWasm(imports: unknown, receive: (instance: unknown, module: unknown) => void) {
          wasm.instantiate(wasmBytes, imports).then(({ instance, module }) => {
            memory = Object.values(instance.exports).find(
              (value): value is WasmMemory => value instanceof wasm.Memory,
            );
            stack = findStackFunctions(instance.exports, files?.glue ?? '');
            receive(instance, module);
          }, reject);
          return {};
        },
      }).then(resolve, reject);
    });
  }
  initMs = performance.now() - started;
  return seal;
}

async function readSealFiles(): Promise<{ wasm: Uint8Array<ArrayBuffer>; glue: string } | undefined> {
  try {
    const packageJson = findPackageJSON('node-seal', import.meta.url);
    if (packageJson === undefined) return undefined;
    const base = pathToFileURL(packageJson);
    return {
      wasm: new Uint8Array(await readFile(new URL('dist/seal_throws.wasm', base))),
      glue: await readFile(new URL('dist/seal_throws.js', base), 'utf8'),
    };
  } catch {
    return undefined; // fall back to node-seal's own loader (no heap figures, no stack guard)
  }
}

/**
 * Emscripten's stack functions are wasm exports with minified names; the glue code names them
 * (`_emscripten_stack_get_current=wasmExports["$"]`), so we read the mapping from it.
 */
function findStackFunctions(
  exports: Record<string, unknown>,
  glue: string,
): { current(): number; restore(pointer: number): void } | undefined {
  const current = exports[/[;,{]_emscripten_stack_get_current=wasmExports\["([^"]+)"\]/.exec(glue)?.[1] ?? ''];
  const restore = exports[/[;,{]__emscripten_stack_restore=wasmExports\["([^"]+)"\]/.exec(glue)?.[1] ?? ''];
  if (typeof current !== 'function' || typeof restore !== 'function') return undefined;
  const probe: unknown = current();
  if (typeof probe !== 'number' || probe <= 0) return undefined;
  return { current: current as () => number, restore: restore as (pointer: number) => void };
}

/**
 * Runs SEAL calls that may throw, converting a failure into a `CryptoError` with `code`.
 *
 * Why this exists: when a C++ exception of node-seal 7 (Emscripten, WebAssembly exception
 * handling) reaches JavaScript, (1) the WebAssembly stack pointer is not restored, leaking 16
 * bytes of the 64 KiB stack per exception, so after about 4,000 caught exceptions the runtime
 * aborts ("memory access out of bounds", measured); and (2) the exception object stays allocated
 * (about 90 bytes each, measured) until its refcount is decremented. Both would let a stream of
 * corrupted uploads kill the coordinator. We save the stack pointer before `fn`, restore it on
 * failure and free the exception.
 */
export function callSeal<T>(seal: SealModule, code: CryptoErrorCode, context: string, fn: () => T): T {
  const pointer = stack?.current();
  try {
    return fn();
  } catch (reason) {
    if (pointer !== undefined) stack?.restore(pointer);
    throw sealError(seal, reason, code, context);
  }
}

/** Converts an exception thrown by SEAL into a `CryptoError` and frees the C++ exception object. */
function sealError(seal: SealModule, reason: unknown, code: CryptoErrorCode, context: string): CryptoError {
  if (reason instanceof CryptoError) return reason;
  const message = `${context}: ${describeThrown(reason)}`;
  if (wasm.Exception !== undefined && reason instanceof wasm.Exception) {
    try {
      (seal as unknown as { decrementExceptionRefcount(e: object): void }).decrementExceptionRefcount(reason);
    } catch {
      // not a C++ exception of this module; nothing to free
    }
  }
  return new CryptoError(code, message, { cause: reason });
}
