#!/usr/bin/env bash
# The reduced bench:learning run of the README (2026-12-06): one process per partition,
# niced, each printing its JSON object to bench/learning/result-<partition>.json.
# Protocol changes (stated in each JSON under reduction): 10 rounds (of 50), 1 local epoch
# (of 10), 3,000 training images (of 60,000, 300 per device on average), 2,000 test images,
# batch 32 and SGD step 0.05 (NIID-Bench: 64 and 0.01) so that so short a run learns.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
common=(--rounds 10 --epochs 1 --batch-size 32 --learning-rate 0.05 --train-count 3000 --test-count 2000)
main=fedavg,fedprox,fedavgm,fedadam,fedyogi,fedadagrad,qfedavg
nice -n 19 scripts/node24.sh npm run -s bench:learning -- "${common[@]}" --partitions dir0.1 > bench/learning/result-dir0.1.json
nice -n 19 scripts/node24.sh npm run -s bench:learning -- "${common[@]}" --partitions dir0.5 --strategies "$main" > bench/learning/result-dir0.5.json
nice -n 19 scripts/node24.sh npm run -s bench:learning -- "${common[@]}" --partitions iid --strategies "$main" > bench/learning/result-iid.json
