#!/usr/bin/env node
// The `veil` command. This launcher is committed (the compiled CLI in dist/ is
// built by `npm ci` through the root `prepare` script, after npm links bins),
// so `npx veil` exists right after installation.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/bin/veil.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('veil: not built yet; run `npm run build` (npm ci does it) in the repository root\n');
  process.exit(1);
}
await import(entry.href);
