// Regenerates src/gen/ of the package in the current directory (npm runs a package's scripts
// there): TypeScript types for the proto files named on the command line (paths under proto/,
// e.g. veil/v1/federation.proto) with @grpc/proto-loader's generator, then adds the `.js`
// extensions that NodeNext ESM resolution requires on relative imports.
// Used by @veil/protocol (federation.proto) and @veil/custodian (custodian.proto).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const protos = process.argv.slice(2);
if (protos.length === 0) {
  console.error('usage: node scripts/gen-proto-types.mjs PROTO... (run in the package directory; paths under proto/)');
  process.exit(2);
}
const here = process.cwd();
const require = createRequire(join(here, 'package.json'));
const protoRoot = new URL('../proto', import.meta.url).pathname;
const out = join(here, 'src/gen');
rmSync(out, { recursive: true, force: true });
const bin = join(require.resolve('@grpc/proto-loader/package.json'), '..', 'build/bin/proto-loader-gen-types.js');
execFileSync(process.execPath, [
  bin, '--longs=Number', '--enums=String', '--defaults', '--oneofs', '--includeComments',
  '--grpcLib=@grpc/grpc-js', '-I', protoRoot, '-O', out, ...protos,
], { stdio: 'inherit' });

const walk = (dir) => readdirSync(dir).flatMap((f) => {
  const p = join(dir, f);
  return statSync(p).isDirectory() ? walk(p) : [p];
});
for (const file of walk(out).filter((f) => f.endsWith('.ts'))) {
  const src = readFileSync(file, 'utf8').replace(/from '(\.[^']*)'/g, "from '$1.js'");
  writeFileSync(file, src);
}
