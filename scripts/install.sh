#!/usr/bin/env bash
# Installs Veil's dependencies and builds it (npm ci runs the build through the
# root `prepare` script), using Node 24 from the npm registry when the
# machine's Node is older than 22 (scripts/node24.sh). Skips the install when
# node_modules is already in sync with package-lock.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# onnxruntime-node (a dev dependency of @veil/export) ships its CPU runtime; its install script would
# fetch optional CUDA binaries from a host outside the npm registry. package.json's allowScripts denies
# it (npm 11); npm 10, which runs every install script, reads this variable instead.
export ONNXRUNTIME_NODE_INSTALL=skip
stamp=node_modules/.veil-installed
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha256sum package-lock.json | cut -d' ' -f1)" ] && [ "${VEIL_FORCE_INSTALL:-}" = "" ]; then
  scripts/node24.sh npm run build --silent
else
  scripts/node24.sh npm ci --no-audit --no-fund
  sha256sum package-lock.json | cut -d' ' -f1 > "$stamp"
fi
