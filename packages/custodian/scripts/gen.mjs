// Regenerates src/gen/ (TypeScript types for proto/veil/v1/custodian.proto) with
// @grpc/proto-loader's generator, then adds the `.js` extensions that NodeNext
// ESM resolution requires on relative imports.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const here = new URL('..', import.meta.url).pathname;
const out = join(here, 'src/gen');
rmSync(out, { recursive: true, force: true });
const bin = join(require.resolve('@grpc/proto-loader/package.json'), '..', 'build/bin/proto-loader-gen-types.js');
execFileSync(process.execPath, [
  bin, '--longs=Number', '--enums=String', '--defaults', '--oneofs', '--includeComments',
  '--grpcLib=@grpc/grpc-js', '-I', join(here, '../../proto'), '-O', out, 'veil/v1/custodian.proto',
], { stdio: 'inherit' });

const walk = (dir) => readdirSync(dir).flatMap((f) => {
  const p = join(dir, f);
  return statSync(p).isDirectory() ? walk(p) : [p];
});
for (const file of walk(out).filter((f) => f.endsWith('.ts'))) {
  const src = readFileSync(file, 'utf8').replace(/from '(\.[^']*)'/g, "from '$1.js'");
  writeFileSync(file, src);
}
