#!/usr/bin/env bash
# npm run bench:he — the per-value HE figures (bench/he.ts, 100 clients x 199,210 values)
# merged with the demo round times, plaintext and encrypted (bench/he-rounds.ts), and the
# committee-mode figures (bench/he-committee.ts: 20 devices x 100,000 values, 4-of-7).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="$(npx --no-install tsx bench/he-rounds.ts "$@")"
committee="$(npx --no-install tsx bench/he-committee.ts)"
exec npx --no-install tsx bench/he.ts --merge "$rounds" --merge "$committee"
