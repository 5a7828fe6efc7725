#!/usr/bin/env bash
# Fresh machine, one command: install (Node 24 if needed) and run the local
# demo federation on the embedded database. Extra arguments go to `veil demo`,
# e.g. scripts/demo.sh --clients 10 --rounds 10 --json
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh"
cd "$root"
exec scripts/node24.sh npx --no-install veil demo "$@"
