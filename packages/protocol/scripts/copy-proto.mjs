// Copies the repository's proto/veil/ into the package (packages/protocol/proto/) before
// `npm pack`: the installed package loads veil/v1/federation.proto at run time
// (protoRoot() in src/service.ts looks for it beside dist/).
import { cpSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const from = fileURLToPath(new URL('../../../proto/veil', import.meta.url));
const to = fileURLToPath(new URL('../proto/veil', import.meta.url));
rmSync(fileURLToPath(new URL('../proto', import.meta.url)), { recursive: true, force: true });
cpSync(from, to, { recursive: true });
