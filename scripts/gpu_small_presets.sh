#!/usr/bin/env bash
# Trains every task's `small` preset on a GPU machine with burn-tch, in two
# queues at once (one per GPU on a two-GPU host, both on GPU 0 otherwise:
# then tokens/s are not speed figures, the runs share the GPU). Expects gpu-bin/ with the xz-compressed tch binary and the
# data archives (see the README's "Results" section); writes
# $OUT/summary.txt and $OUT/runs.tar.gz (run directories without checkpoints).
source "$(dirname "$0")/gpu_env.sh"
DATA=/tmp/data
RUNS=/tmp/runs
mkdir -p $RUNS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/summary.txt"
echo "binary: $($BIN --version)" | tee -a "$OUT/summary.txt"
for pair in "cifar10 cifar10-jpeg.tar.xz" "imdb imdb-small.tar.xz" "wikipedia wikipedia-subset.tar.xz" \
            "tiny-imagenet-train tiny-imagenet-train-small.tar.xz" "tiny-imagenet-val tiny-imagenet-val-small.tar.xz"; do
  set -- $pair
  $BIN data prepare "$1" --from "gpu-bin/$2" --data-dir $DATA 2>&1 | tail -1
done

run() { # gpu config name
  local gpu=$1 cfg=$2 name=$3
  local t0=$(date +%s)
  $BIN --backend tch --device "$gpu" train --config "$cfg" --preset small --run-dir "$RUNS/$name" \
      --data-dir $DATA --plain > "$RUNS/$name.log" 2>&1
  local rc=$?
  $BIN --backend tch --device "$gpu" eval --run-dir "$RUNS/$name" --data-dir $DATA >> "$RUNS/$name.log" 2>&1
  echo "$name: exit $rc, $(( $(date +%s) - t0 )) s on GPU $gpu: $(grep -E '^finished' "$RUNS/$name.log" | tail -1)" >> "$RUNS/done.txt"
}

queue0() {
  run 0 experiments/image/cifar10.toml cifar10
  run 0 experiments/text/lm.toml lm
  run 0 experiments/lra/text.toml lra_text
  run 0 experiments/lra/listops.toml listops
}
# the second queue runs on GPU 1, or beside the first on GPU 0 of a one-GPU host
N=$(nvidia-smi -L | wc -l)
G1=$(( N >= 2 ? 1 : 0 ))
queue1() {
  run $G1 experiments/image/imagenet64.toml imagenet64
  run $G1 experiments/text/mlm.toml mlm
  run $G1 experiments/lra/retrieval.toml lra_retrieval
  run $G1 experiments/lra/image.toml lra_image
  run $G1 experiments/lra/pathfinder.toml pathfinder
}
# a wall-clock budget for the training queues, so that results are always packed
queue0 & P0=$!
queue1 & P1=$!
( sleep "${BUDGET:-470}"; echo "budget of ${BUDGET:-470} s reached: stopping what still runs" >> $RUNS/done.txt;
  kill $P0 $P1 2>/dev/null; pkill -TERM -f "$BIN --backend" ) & W=$!
wait $P0 $P1 2>/dev/null
kill $W 2>/dev/null
cat $RUNS/done.txt | tee -a "$OUT/summary.txt"
for d in $RUNS/*/; do
  n=$(basename $d); grep -h "step .*valid\|: step " $RUNS/$n.log | tail -3 | sed "s/^/$n: /" >> "$OUT/summary.txt"
  rm -rf $d/checkpoints
done
tar -czf "$OUT/runs.tar.gz" -C $RUNS .
tail -60 "$OUT/summary.txt"
