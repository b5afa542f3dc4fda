#!/usr/bin/env bash
# Where the GPU time of a training step goes: Nsight Compute times
# (`gpu__time_duration.sum`) of a window of consecutive kernels of the
# CIFAR-10 `speed-bf16` run (6 x 512, 8 heads, Combiner-Axial row-major,
# L = 3072, batch 32, burn-tch), past the warm-up steps, grouped by kind.
#   SKIP=6000 COUNT=3000 PRESET=speed-bf16 bash scripts/gpu_profile.sh
# Needs gpu-bin/ with the tch binary and cifar10-jpeg.tar.xz (or the data
# already prepared in $DATA). Writes $OUT/profile-groups.md and
# $OUT/profile-kernels.txt and $OUT/profile-sequence.txt (every kernel in launch order).
source "$(dirname "$0")/gpu_env.sh"
DATA=${DATA:-/tmp/data}
SKIP=${SKIP:-6000}
COUNT=${COUNT:-3000}
PRESET=${PRESET:-speed-bf16}
W=/tmp/profile
rm -rf $W && mkdir -p $W
[ -d $DATA/cifar10 ] || $BIN data prepare cifar10 --from gpu-bin/cifar10-jpeg.tar.xz --data-dir $DATA 2>&1 | tail -1
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "no ncu on this host"; exit 1; }
# the GPU's own clocks and caches (ncu locks base clocks and flushes caches
# between kernels by default), so that the durations are those of a run
"$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --launch-skip "$SKIP" --launch-count "$COUNT" --csv \
    $BIN --backend tch train --config experiments/image/cifar10.toml --preset "$PRESET" \
    --run-dir $W/run --data-dir $DATA --plain --stop-after 8 > $W/ncu.csv 2> $W/ncu.log
echo "ncu: exit $?"; cp $W/ncu.log "$OUT/"; grep -v "^==PROF==" $W/ncu.log | tail -5
python3 - $W/ncu.csv "$OUT" "$($BIN --version)" "$PRESET" "$SKIP" "$COUNT" <<'PY'
import csv, collections, re, sys
path, out, version, preset, skip, count = sys.argv[1:7]
scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
rows = []
with open(path) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    ms = float(r["Metric Value"].replace(",", "")) * scale.get(r["Metric Unit"], 1e-6)
    rows.append((r["Kernel Name"], ms))
groups = [
    ("matmul (cuBLAS)", r"nvjet|gemm|cutlass|xmma|cublas"),
    ("gather / scatter / index_select", r"index|scatter|gather"),
    ("cat (copies)", r"CatArray"),
    ("dtype casts and copies", r"copy_kernel|bfloat16_copy|direct_copy"),
    ("reductions (softmax max/sum, norms, loss)", r"reduce_kernel|softmax|norm"),
    ("fills", r"FillFunctor"),
    ("other elementwise (masks, exp, add, mul, GELU, Adam)", r""),
]
total = sum(ms for _, ms in rows) or 1.0
by_group = collections.OrderedDict((g, [0.0, 0]) for g, _ in groups)
by_kernel = collections.defaultdict(lambda: [0.0, 0])
for name, ms in rows:
    g = next(g for g, pat in groups if re.search(pat, name))
    by_group[g][0] += ms; by_group[g][1] += 1
    by_kernel[name][0] += ms; by_kernel[name][1] += 1
with open(f"{out}/profile-groups.md", "w") as f:
    f.write(f"Nsight Compute (clocks and caches as in a run), {len(rows)} kernels (launches {skip}-{int(skip) + int(count)}) of the "
            f"CIFAR-10 `{preset}` run, binary {version}: {total:.1f} ms of GPU time\n\n")
    f.write("| kernel group | share of GPU time | kernels |\n|---|---:|---:|\n")
    for g, (ms, n) in sorted(by_group.items(), key=lambda kv: -kv[1][0]):
        f.write(f"| {g} | {100 * ms / total:.1f}% | {n} |\n")
with open(f"{out}/profile-kernels.txt", "w") as f:
    f.write(f"{len(rows)} kernels, {total:.1f} ms total\n")
    for name, (ms, n) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:40]:
        f.write(f"{100 * ms / total:5.1f}% {ms:9.2f} ms {n:5d}x  {name[:100]}\n")
# the window in launch order, to read a step's kernels against the code
with open(f"{out}/profile-sequence.txt", "w") as f:
    for i, (name, ms) in enumerate(rows):
        f.write(f"{i:5d} {1000 * ms:9.1f} us  {name[:120]}\n")
print(open(f"{out}/profile-groups.md").read())
PY
