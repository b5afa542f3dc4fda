#!/usr/bin/env bash
# Figure 3 on one GPU: `combiner bench attention` (burn-tch) and the PyTorch
# companion (scripts/bench_attention_torch.py) at the same shapes, in the
# same job, then one report with both. Expects gpu-bin/combiner.xz (a tch
# build). Writes $OUT/attention.{png,md} and the JSON files of both sides.
#   LENGTHS=1024,4096,16384 DTYPE=bf16 MODE=lm bash scripts/gpu_bench_attention.sh
# FLAGS=--no-fused measures our generic operations instead of the fused kernel.
source "$(dirname "$0")/gpu_env.sh"
LENGTHS=${LENGTHS:-1024,2048,4096,8192,16384,32768,65536}
DTYPE=${DTYPE:-bf16}
MODE=${MODE:-lm}
SHAPE="--batch ${BATCH:-1} --heads ${HEADS:-8} --head-dim ${HEAD_DIM:-64} --dtype $DTYPE --mode $MODE --warmup ${WARMUP:-3} --repeats ${REPEATS:-10}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "binary: $($BIN --version)"
  echo "shape: L in $LENGTHS, $SHAPE"
} | tee "$OUT/summary.txt"
python3 scripts/bench_attention_torch.py --lengths "$LENGTHS" $SHAPE \
    --out "$OUT/pytorch-$DTYPE-$MODE.json" 2> "$OUT/pytorch.log"
tail -n 3 "$OUT/pytorch.log"
# lengths outer, models inner, each cell under a time limit, and no new cell
# after BUDGET seconds: a slow or hung cell costs only the longest lengths
rm -rf /tmp/bench
DEADLINE=$(( $(date +%s) + ${BUDGET:-420} ))
for L in ${LENGTHS//,/ }; do
  for m in ${MODELS:-vanilla performer bigbird sparse-fixed sparse-axial combiner-fixed combiner-axial combiner-mixture combiner-logsparse}; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then echo "$m L=$L: not run (budget of ${BUDGET:-420} s spent)" >> "$OUT/combiner.log"; continue; fi
    timeout "${CELL_BUDGET:-60}" $BIN ${FLAGS:-} --backend tch bench attention --models "$m" --lengths "$L" $SHAPE \
        --out "/tmp/bench/$m-$L" 2>> "$OUT/combiner.log" || echo "$m L=$L: stopped after ${CELL_BUDGET:-60} s" >> "$OUT/combiner.log"
  done
done
python3 - "$OUT/combiner-tch-$DTYPE-$MODE.json" $(ls -tr /tmp/bench/*/combiner-*.json) <<'PY'
import json, sys
files = [json.load(open(p)) for p in sys.argv[2:]]
merged = dict(files[0], results=[r for f in files for r in f["results"]])
json.dump(merged, open(sys.argv[1], "w"), indent=1)
PY
$BIN bench report "$OUT/combiner-tch-$DTYPE-$MODE.json" "$OUT/pytorch-$DTYPE-$MODE.json" --out "$OUT" 2>> "$OUT/combiner.log"
tail -n 3 "$OUT/combiner.log"
cat "$OUT/pytorch.log" "$OUT/combiner.log" >> "$OUT/summary.txt"
rm -f "$OUT/pytorch.log" "$OUT/combiner.log"
