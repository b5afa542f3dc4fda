#!/usr/bin/env bash
# Runs `combiner table` (burn-tch) on a GPU machine within a wall-clock
# budget and packs what it made: $OUT/results/ (results.md, .csv,
# curves.png) and $OUT/runs.tar.gz (the cells' run directories without
# checkpoints, so that `--report-only` can rebuild the results elsewhere).
# Expects gpu-bin/combiner.xz and the data archives the table's columns need.
#   TABLE=table1 ARGS="--columns cifar10 --parallel 3" BUDGET=540 bash scripts/gpu_table.sh
# Give the device call a timeout at least 45 s above BUDGET: after the budget
# every row writes its checkpoint, then the report and runs.tar.gz are made;
# a call killed before the tarball brings back no run directories.
source "$(dirname "$0")/gpu_env.sh"
DATA=/tmp/data
RUNS=/tmp/runs
for pair in ${PREPARE:-"cifar10:cifar10-jpeg.tar.xz"}; do
  $BIN data prepare "${pair%%:*}" --from "gpu-bin/${pair#*:}" --data-dir $DATA 2>&1 | tail -n 1
done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "binary: $($BIN --version)"
} | tee "$OUT/summary.txt"
t0=$(date +%s)
# SIGTERM at the budget: every row finishes its step, checkpoints and stops
timeout -s TERM "${BUDGET:-540}" $BIN --backend tch table "$TABLE" --preset "${PRESET:-small}" \
    --runs-dir $RUNS --data-dir $DATA --results-dir "$OUT/results" ${ARGS:-} > "$OUT/table.log" 2>&1
echo "table exit $?, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
$BIN table "$TABLE" --preset "${PRESET:-small}" --runs-dir $RUNS --results-dir "$OUT/results" --report-only ${ARGS:-} 2>&1 | tail -n 1
grep -E "^\[|cells have" "$OUT/table.log" | tee -a "$OUT/summary.txt"
tar -C $RUNS --exclude checkpoints -czf "$OUT/runs.tar.gz" .
