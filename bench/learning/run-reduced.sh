#!/usr/bin/env bash
# The reduced bench:learning run of the README, in three shapes, one niced process per
# (shape, partition, strategy), JOBS (default 2) at a time, in priority order, so that whatever
# finishes is kept; each prints its JSON object to bench/learning/results/<shape>/<partition>-<strategy>.json
# (stderr, the per-round progress, to a .log beside it while it runs; a cell with a .log is left to
# the run that owns it, so a second invocation can add workers: delete a .log left by a killed run).
# An optional grep pattern restricts the cells, e.g. `bash bench/learning/run-reduced.sh protocol-data:dir0.1`.
# Without a pattern, the throughput (results/throughput.json) follows the cells.
#   protocol-data: FedAvg and FedProx on IID, Dir(0.5) and Dir(0.1), and the server optimizers and
#     q-FedAvg on Dir(0.1), with NIID-Bench's data and settings (all 60,000 training images over 10
#     devices, all 10,000 test images, batch 64, SGD lr 0.01 momentum 0.9, FedProx mu 0.01) but
#     1 local epoch (of 10) and 3 rounds (of 50).
#   protocol-data-seed2: the Dir(0.1) cells of protocol-data again with --seed 2
#     (another partition, initial model and minibatch order): is the ranking of seed 1 more than noise?
#   dir0.1-small: every strategy on Dir(0.1), same settings but 6,000 training images (600 per
#     device on average) and 2,000 test images, 1 local epoch, 8 rounds.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=(
  protocol-data:iid:fedavg protocol-data:dir0.5:fedavg dir0.1-small:dir0.1:fedavg dir0.1-small:dir0.1:fedprox
  protocol-data:iid:fedprox protocol-data:dir0.5:fedprox
  dir0.1-small:dir0.1:fedadam dir0.1-small:dir0.1:fedadagrad dir0.1-small:dir0.1:fedyogi dir0.1-small:dir0.1:fedavgm
  dir0.1-small:dir0.1:qfedavg dir0.1-small:dir0.1:fedmedian dir0.1-small:dir0.1:fedtrimmedavg
  dir0.1-small:dir0.1:multikrum dir0.1-small:dir0.1:krum dir0.1-small:dir0.1:bulyan
  protocol-data:dir0.1:fedavg protocol-data:dir0.1:fedprox protocol-data:dir0.1:fedadagrad protocol-data:dir0.1:fedavgm
  protocol-data:dir0.1:fedadam protocol-data:dir0.1:fedyogi protocol-data:dir0.1:qfedavg
  protocol-data-seed2:dir0.1:fedavg protocol-data-seed2:dir0.1:fedadagrad protocol-data-seed2:dir0.1:fedprox
  protocol-data-seed2:dir0.1:fedadam protocol-data-seed2:dir0.1:fedyogi protocol-data-seed2:dir0.1:fedavgm
  protocol-data-seed2:dir0.1:qfedavg
)
cell() {
  local shape=${1%%:*} rest=${1#*:}
  local partition=${rest%%:*} strategy=${rest##*:}
  local out=bench/learning/results/$shape/$partition-$strategy.json
  if [ -s "$out" ] || [ -e "$out.log" ]; then return 0; fi
  mkdir -p "$(dirname "$out")"
  local args
  case $shape in
    protocol-data) args=(--rounds 3 --epochs 1 --train-count 60000 --test-count 10000) ;;
    protocol-data-seed2) args=(--rounds 3 --epochs 1 --train-count 60000 --test-count 10000 --seed 2) ;;
    dir0.1-small) args=(--rounds 8 --epochs 1 --train-count 6000 --test-count 2000) ;;
  esac
  nice -n 19 scripts/node24.sh npm run -s bench:learning -- "${args[@]}" --throughput-samples 0 \
    --partitions "$partition" --strategies "$strategy" > "$out.tmp" 2> "$out.log" && mv "$out.tmp" "$out" && rm -f "$out.log"
}
export -f cell
printf '%s\n' "${runs[@]}" | grep -- "${1:-.}" | xargs -P "${JOBS:-2}" -I{} bash -c 'cell "$1"' _ {}
if [ $# -eq 0 ]; then
  nice -n 19 scripts/node24.sh npm run -s bench:learning -- --rounds 1 --epochs 1 --train-count 1280 --test-count 100 \
    --partitions iid --strategies fedavg > bench/learning/results/throughput.json
fi
