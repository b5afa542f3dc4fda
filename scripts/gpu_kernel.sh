#!/usr/bin/env bash
# The fused joint-softmax kernel of the tch backend against the generic
# operations, on one GPU: `combiner bench kernel` in bf16 and f16 (every plan
# with one layout, awkward lengths, LM and MLM; output and q, k, v gradients
# against an f32 reference). Expects gpu-bin/combiner.xz (a tch build).
# Writes $OUT/kernel-bf16.txt and $OUT/kernel-f16.txt; exits non-zero when a
# check fails.
#   LENGTHS=37,1000,3072 bash scripts/gpu_kernel.sh
source "$(dirname "$0")/gpu_env.sh"
LENGTHS=${LENGTHS:-37,1000,3072}
rc=0
for dtype in bf16 f16; do
  { echo "binary: $($BIN --version)"; nvidia-smi --query-gpu=name --format=csv,noheader; } > "$OUT/kernel-$dtype.txt"
  $BIN --backend tch bench kernel --dtype $dtype --lengths "$LENGTHS" >> "$OUT/kernel-$dtype.txt" 2>&1 || rc=1
  tail -n 2 "$OUT/kernel-$dtype.txt"
done
exit $rc
