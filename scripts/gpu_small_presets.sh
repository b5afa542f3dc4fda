#!/usr/bin/env bash
# Trains every task's `small` preset on a GPU machine with burn-tch, two
# queues at once on a two-GPU host (one per GPU), and runs the PyTorch dense
# reference at the CIFAR-10 small model's size in the same job for a
# tokens/s ratio. Expects gpu-bin/ with the xz-compressed tch binary and the
# data archives (see the README's "Results" section); writes
# $OUT/summary.txt and $OUT/runs.tar.gz (run directories without checkpoints).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
xz -dkf gpu-bin/combiner.xz && chmod +x gpu-bin/combiner
TD=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH=$TD/lib:$TD/../nvidia/cu13/lib:${LD_LIBRARY_PATH:-}
BIN=$PWD/gpu-bin/combiner
DATA=/tmp/data
RUNS=/tmp/runs
mkdir -p $RUNS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/summary.txt"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" | tee -a "$OUT/summary.txt"
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
queue1() {
  run 1 experiments/image/imagenet64.toml imagenet64
  run 1 experiments/text/mlm.toml mlm
  run 1 experiments/lra/retrieval.toml lra_retrieval
  run 1 experiments/lra/image.toml lra_image
  run 1 experiments/lra/pathfinder.toml pathfinder
}
N=$(nvidia-smi -L | wc -l)
if [ "$N" -ge 2 ]; then queue0 & queue1 & wait; else queue0; queue1; fi
# the PyTorch reference at the CIFAR-10 small size (4 x 256, 8 heads, L 3072, batch 16), f32
CUDA_VISIBLE_DEVICES=0 python3 scripts/torch_dense_baseline.py --d-model 256 --heads 8 --layers 4 --d-ff 1024 \
    --batch 16 --seq 3072 --steps 30 --dtype float32 > $RUNS/torch-reference.json 2> $RUNS/torch-reference.log
cat $RUNS/done.txt | tee -a "$OUT/summary.txt"
cat $RUNS/torch-reference.json | tee -a "$OUT/summary.txt"
for d in $RUNS/*/; do
  n=$(basename $d); grep -h "step .*valid\|: step " $RUNS/$n.log | tail -3 | sed "s/^/$n: /" >> "$OUT/summary.txt"
  rm -rf $d/checkpoints
done
tar -czf "$OUT/runs.tar.gz" -C $RUNS .
tail -60 "$OUT/summary.txt"
