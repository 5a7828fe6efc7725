#!/usr/bin/env bash
# Fresh machine, one command: install (Node 24 if needed) and run the local
# demo federation on the embedded database. Extra arguments go to `veil demo`,
# e.g. scripts/demo.sh --clients 10 --rounds 10 --json
# The install and build output (npm, Prisma, dashboard build) goes to stderr: stdout carries only
# the demo's own output, so `scripts/demo.sh --json ... | jq` reads just the JSON summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh" >&2
cd "$root"
exec scripts/node24.sh npx --no-install veil demo "$@"
