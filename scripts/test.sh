#!/usr/bin/env bash
# Fresh machine, one command: install (Node 24 if needed), make sure the local
# PostgreSQL server the integration and e2e tests use is running, type-check
# every source and test file (npm run typecheck), and run the whole test suite
# (unit, integration, e2e). Extra arguments go to vitest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install.sh"
"$root/scripts/ensure-datasets.sh"
"$root/scripts/ensure-browser.sh"
cd "$root"
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "veil: starting the local PostgreSQL server" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
# Type-check the test files first (vitest strips types without checking them): tsconfig.test.json.
scripts/node24.sh npm run -s typecheck
# Integration and e2e tests create (and drop) their own databases through this server.
export VEIL_TEST_DATABASE_URL="${VEIL_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
exec scripts/node24.sh npx --no-install vitest run "$@"
