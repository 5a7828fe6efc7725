// Builds the operator dashboard (dashboard/) into dist/dashboard/: one ES module
// bundle and one stylesheet (uPlot's included), content-hashed names, index.html
// pointing at them, and gzip + brotli copies of every file for the static route
// (http/routes/dashboard.ts) to serve precompressed. Run by `npm run gen`.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, gzipSync, constants } from 'node:zlib';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'dashboard');
const out = join(root, 'dist', 'dashboard');
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const result = await build({
  entryPoints: [join(src, 'src', 'main.ts'), join(src, 'style.css')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  write: false,
  outdir: out,
  legalComments: 'none',
  logLevel: 'warning',
});
const hashed = (name, contents) => {
  const hash = createHash('sha256').update(contents).digest('hex').slice(0, 12);
  const dot = name.lastIndexOf('.');
  return `${name.slice(0, dot)}-${hash}${name.slice(dot)}`;
};
const files = new Map();
let js;
let css;
for (const file of result.outputFiles) {
  const name = hashed(basename(file.path), file.contents);
  files.set(name, file.contents);
  if (name.endsWith('.js')) js = name;
  if (name.endsWith('.css')) css = name;
}
const html = (await readFile(join(src, 'index.html'), 'utf8')).replace('%SCRIPT%', js).replace('%STYLE%', css);
files.set('index.html', Buffer.from(html));
const manifest = {};
for (const [name, contents] of files) {
  await writeFile(join(out, name), contents);
  const gz = gzipSync(contents, { level: 9 });
  const br = brotliCompressSync(contents, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });
  await writeFile(join(out, `${name}.gz`), gz);
  await writeFile(join(out, `${name}.br`), br);
  manifest[name] = { bytes: contents.byteLength, gzipBytes: gz.byteLength, brotliBytes: br.byteLength };
}
await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2));
console.log(`dashboard: ${[...files.keys()].join(', ')} (${Object.values(manifest).reduce((a, m) => a + m.gzipBytes, 0)} bytes gzip)`);
