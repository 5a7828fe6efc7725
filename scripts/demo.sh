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
# glibc's malloc tunables the container image sets for its processes (@veil/server
# COORDINATOR_ENVIRONMENT, packages/server/src/runtime-options.ts; its test checks this line), for the
# demo's coordinator, custodians and device processes. A GLIBC_TUNABLES already set is kept.
export GLIBC_TUNABLES="${GLIBC_TUNABLES-glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864}"
exec scripts/node24.sh npx --no-install veil demo "$@"
