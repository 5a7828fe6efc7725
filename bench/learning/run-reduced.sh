#!/usr/bin/env bash
# The reduced bench:learning run of the README: one niced process per (partition, strategy),
# each printing its JSON object to bench/learning/results/<partition>-<strategy>.json, in
# priority order (Dir(0.1) first), so that whatever finishes is kept; then the throughput.
# Protocol changes (stated in each JSON under reduction): 8 rounds (of 50), 1 local epoch
# (of 10), 2,400 training images (of 60,000; 240 per device on average), 1,000 test images,
# batch 32 and SGD step 0.05 (NIID-Bench: 64 and 0.01) so that so short a run learns.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mkdir -p bench/learning/results
common=(--rounds 8 --epochs 1 --batch-size 32 --learning-rate 0.05 --train-count 2400 --test-count 1000 --throughput-samples 0)
runs=(
  dir0.1:fedavg dir0.1:fedprox dir0.1:fedadam dir0.1:fedavgm dir0.1:fedyogi dir0.1:fedadagrad dir0.1:qfedavg
  dir0.5:fedavg dir0.5:fedprox iid:fedavg iid:fedprox dir0.5:fedadam iid:fedadam dir0.5:fedavgm
  dir0.1:fedmedian dir0.1:fedtrimmedavg dir0.1:multikrum dir0.1:krum dir0.1:bulyan
  dir0.5:fedyogi dir0.5:fedadagrad dir0.5:qfedavg iid:fedavgm iid:fedyogi iid:fedadagrad iid:qfedavg
)
for run in "${runs[@]}"; do
  partition=${run%%:*}; strategy=${run##*:}
  out=bench/learning/results/$partition-$strategy.json
  [ -s "$out" ] && continue
  nice -n 19 scripts/node24.sh npm run -s bench:learning -- "${common[@]}" --partitions "$partition" --strategies "$strategy" > "$out.tmp" && mv "$out.tmp" "$out"
done
nice -n 19 scripts/node24.sh npm run -s bench:learning -- --rounds 1 --epochs 1 --train-count 1280 --test-count 100 --partitions iid --strategies fedavg > bench/learning/results/throughput.json
