#!/usr/bin/env bash
# Where the GPU waits for the host: an Nsight Systems timeline of the
# CIFAR-10 `speed-bf16` run (burn-tch), and the idle gaps between its GPU
# operations after the warm-up steps: the busy share of the wall time and
# the longest gaps with the operations on either side.
#   STEPS=16 PRESET=speed-bf16 bash scripts/gpu_timeline.sh
# Needs gpu-bin/ with the tch binary and cifar10-jpeg.tar.xz (or the data
# already prepared in $DATA) and nsys on the host. Writes $OUT/timeline.md.
source "$(dirname "$0")/gpu_env.sh"
DATA=${DATA:-/tmp/data}
STEPS=${STEPS:-16}
PRESET=${PRESET:-speed-bf16}
W=/tmp/timeline
rm -rf $W && mkdir -p $W
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/nsight-systems*/bin/nsys 2>/dev/null | head -1)
[ -n "$NSYS" ] || { echo "no nsys on this host" | tee "$OUT/timeline.md"; exit 1; }
[ -d $DATA/cifar10 ] || $BIN data prepare cifar10 --from gpu-bin/cifar10-jpeg.tar.xz --data-dir $DATA 2>&1 | tail -1
"$NSYS" profile -o $W/run --trace=cuda --sample=none --cpuctxsw=none --force-overwrite true \
    $BIN --backend tch train --config experiments/image/cifar10.toml --preset "$PRESET" \
    --run-dir $W/out --data-dir $DATA --plain --stop-after "$STEPS" > $W/nsys.log 2>&1
echo "nsys: exit $?"; tail -3 $W/nsys.log
"$NSYS" stats --report cuda_gpu_trace --format csv --output $W/trace $W/run.nsys-rep > /dev/null 2>&1
python3 - $W/trace_cuda_gpu_trace.csv "$OUT" "$($BIN --version)" "$PRESET" "$STEPS" <<'PY'
import csv, sys
path, out, version, preset, steps = sys.argv[1:6]
ops = []
with open(path) as f:
    for r in csv.DictReader(f):
        ops.append((int(r["Start (ns)"]), int(r["Duration (ns)"]), r["Name"]))
ops.sort()
# the middle of the run: past the warm-up of the first steps, before the
# validation and checkpoint of the last
ops = ops[int(0.4 * len(ops)):int(0.85 * len(ops))]
span = ops[-1][0] + ops[-1][1] - ops[0][0]
busy, gaps, end, prev = 0, [], ops[0][0], ops[0][2]
for start, dur, name in ops:
    if start > end:
        gaps.append((start - end, prev, name))
    busy += dur
    if start + dur > end:
        end, prev = start + dur, name
gaps.sort(reverse=True)
idle = sum(g for g, _, _ in gaps)
lines = [f"# GPU timeline of the CIFAR-10 `{preset}` run ({steps} steps), {version}", "",
         f"Operations 40% to 85% of the run: {span / 1e6:.1f} ms of wall time, GPU operations {busy / 1e6:.1f} ms, "
         f"idle gaps {idle / 1e6:.1f} ms ({100 * idle / span:.1f}%) in {len(gaps)} gaps, "
         f"{sum(1 for g in gaps if g[0] > 100_000)} of them over 0.1 ms ({sum(g for g, _, _ in gaps if g > 100_000) / 1e6:.1f} ms).", "",
         "| gap ms | after | before |", "|---:|---|---|"]
for g, a, b in gaps[:25]:
    lines.append(f"| {g / 1e6:.3f} | {a[:70]} | {b[:70]} |")
open(f"{out}/timeline.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
