// Bundles the SDK for browsers (src/browser.ts) with esbuild into dist-browser/: ES modules with
// code splitting, so TF.js (and its backends) and node-seal are separate chunks loaded on first
// use. Node-only modules are replaced: node:crypto by src/browser/node-crypto.ts (@noble),
// the gRPC transport by a stub that points to createConnectTransport, file-system modules by
// stubs that throw; Buffer comes from the `buffer` package. The wasm files that TF.js's wasm
// backend and node-seal fetch are copied beside the chunks.
//
// Prints one JSON object: gzip sizes of the SDK with its dependencies other than TF.js and
// node-seal (the 150 KB target), of the TF.js chunks, of node-seal, and the total.
//
//   node packages/client-sdk/scripts/build-browser.mjs [--outdir DIR]
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';

const here = new URL('..', import.meta.url).pathname;
const require = createRequire(import.meta.url);
const args = process.argv.slice(2);
const outdir = args.includes('--outdir') ? args[args.indexOf('--outdir') + 1] : join(here, 'dist-browser');

const shim = (file) => join(here, 'src/browser', file);
const NODE_STUBS = new Set(['node:fs', 'node:fs/promises', 'node:path', 'node:module', 'node:url', 'fs', 'path', 'module', 'url']);

/** @type {import('esbuild').Plugin} */
const browserPlugin = {
  name: 'veil-browser',
  setup(b) {
    b.onResolve({ filter: /^(node:)?crypto$/ }, () => ({ path: shim('node-crypto.ts') }));
    b.onResolve({ filter: /^(node:)?(fs|fs\/promises|path|module|url)$/ }, (a) => (NODE_STUBS.has(a.path) ? { path: shim('unavailable.ts') } : undefined));
    b.onResolve({ filter: /grpc-transport\.js$/ }, (a) => (a.importer.includes('client-sdk') ? { path: shim('grpc-transport.ts') } : undefined));
    // node-seal as a lazy chunk: the first SEAL() call imports it (shared-key BFV tasks only).
    b.onResolve({ filter: /^node-seal$/ }, () => ({ path: 'lazy-node-seal', namespace: 'veil' }));
    b.onLoad({ filter: /^lazy-node-seal$/, namespace: 'veil' }, () => ({
      contents: "export default (...args) => import('node-seal/throws').then((m) => m.default(...args));",
      resolveDir: here,
      loader: 'js',
    }));
    // The workspace packages' TypeScript sources (not their Node builds).
    b.onResolve({ filter: /^@veil\/(crypto|privacy)$/ }, (a) => ({ path: join(here, '..', a.path.slice(6), 'src/index.ts') }));
    b.onResolve({ filter: /^@veil\/protocol\/codec$/ }, () => ({ path: join(here, '../protocol/src/codec.ts') }));
  },
};

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });
const result = await build({
  entryPoints: { 'veil-sdk': join(here, 'src/browser.ts') },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: false,
  outdir,
  chunkNames: 'chunks/[name]-[hash]',
  metafile: true,
  inject: [shim('globals.ts')],
  define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  // A non-literal import (tfjs-node, tried in Node only) stays an import.
  logOverride: { 'unsupported-dynamic-import': 'silent' },
  plugins: [browserPlugin],
  logLevel: 'warning',
});

// The wasm files fetched at run time, beside the chunks (node-seal finds its own through import.meta.url).
const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
for (const f of readdirSync(join(wasmDir, 'dist')).filter((f) => f.endsWith('.wasm'))) copyFileSync(join(wasmDir, 'dist', f), join(outdir, f));
const sealDir = dirname(new URL(import.meta.resolve('node-seal')).pathname);
mkdirSync(join(outdir, 'chunks'), { recursive: true });
copyFileSync(join(sealDir, 'seal_throws.wasm'), join(outdir, 'chunks', 'seal_throws.wasm'));

// Which output holds what: a chunk is TF.js's or node-seal's by the inputs that make up most of it.
const groups = { sdk: 0, tfjs: 0, seal: 0 };
const files = [];
for (const [file, info] of Object.entries(result.metafile.outputs)) {
  if (!file.endsWith('.js')) continue;
  const bytes = readFileSync(file);
  const gzip = gzipSync(bytes, { level: 9 }).length;
  const byGroup = { sdk: 0, tfjs: 0, seal: 0 };
  for (const [input, { bytesInOutput }] of Object.entries(info.inputs)) {
    const group = input.includes('@tensorflow/') ? 'tfjs' : input.includes('node-seal/') ? 'seal' : 'sdk';
    byGroup[group] += bytesInOutput;
  }
  const group = Object.entries(byGroup).sort((a, b) => b[1] - a[1])[0][0];
  groups[group] += gzip;
  files.push({ file: relative(outdir, file), bytes: bytes.length, gzip, group, sdkBytes: byGroup.sdk, tfjsBytes: byGroup.tfjs, sealBytes: byGroup.seal });
}
const wasm = {};
for (const [name, path] of [
  ['tfjs-backend-wasm-simd.wasm', join(outdir, 'tfjs-backend-wasm-simd.wasm')],
  ['seal_throws.wasm', join(outdir, 'chunks', 'seal_throws.wasm')],
]) {
  wasm[name] = gzipSync(readFileSync(path), { level: 9 }).length;
}
const kb = (n) => Math.round(n / 102.4) / 10;
console.log(
  JSON.stringify({
    bundle: 'veil-sdk browser (esbuild, minified, gzip -9)',
    sdkAndDepsGzipKB: kb(groups.sdk),
    targetKB: 150,
    tfjsGzipKB: kb(groups.tfjs),
    nodeSealJsGzipKB: kb(groups.seal),
    wasmGzipKB: Object.fromEntries(Object.entries(wasm).map(([k, v]) => [k, kb(v)])),
    totalWithTfjsAndSealGzipKB: kb(groups.sdk + groups.tfjs + groups.seal + wasm['tfjs-backend-wasm-simd.wasm'] + wasm['seal_throws.wasm']),
    outdir: relative(process.cwd(), outdir) || '.',
    files,
  }),
);
