#!/usr/bin/env bash
# Training throughput at the paper's ablation size (6 x 512, 8 heads,
# Combiner-Axial row-major), ours in f32 and bf16 mixed precision beside the
# same-size dense model in PyTorch (scaled_dot_product_attention, f32 and bf16
# autocast), all in one job on one GPU:
#   CIFAR-10       L = 3072,  batch 32 (experiments/image/cifar10.toml, presets speed / speed-bf16)
#   ImageNet-64    L = 12288, batch 8  (experiments/image/imagenet64.toml)
# Ours: median tokens/s of metrics.jsonl after 10 warm-up steps. Needs
# gpu-bin/ with the binary (BACKEND=tch by default, or cuda), cifar10-jpeg.tar.xz
# and tiny-imagenet-{train,val}-small.tar.xz. Writes $OUT/speed.md, speed.json, logs.
# ABLATION=1 adds bf16 runs with the dense-layer kernels off (--no-fused-layers:
# fused attention only) and with every kernel off (--no-fused: generic ops).
# BASE=gpu-bin/<other binary>.xz adds bf16 runs of that binary in the same
# call (the previous commit, say), so that a change is measured against it
# on the same host.
source "$(dirname "$0")/gpu_env.sh"
BACKEND=${BACKEND:-tch}
DATA=${DATA:-/tmp/data}
RUNS=/tmp/speed
rm -rf $RUNS && mkdir -p $RUNS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $RUNS/gpu.txt
for pair in "cifar10 cifar10-jpeg.tar.xz" "tiny-imagenet-train tiny-imagenet-train-small.tar.xz" \
            "tiny-imagenet-val tiny-imagenet-val-small.tar.xz"; do
  set -- $pair
  $BIN data prepare "$1" --from "gpu-bin/$2" --data-dir $DATA 2>&1 | tail -1
done

if [ -n "${BASE:-}" ]; then
  xz -dc "$BASE" > gpu-bin/base && chmod +x gpu-bin/base
fi
ours() { # config preset name [global flags] [binary]
  local t0=$(date +%s)
  ${5:-$BIN} --backend $BACKEND ${4:-} train --config "$1" --preset "$2" --run-dir "$RUNS/$3" \
      --data-dir $DATA --plain > "$RUNS/$3.log" 2>&1
  echo "$3: exit $?, $(( $(date +%s) - t0 )) s" | tee -a $RUNS/done.txt
}
torch() { # dtype seq batch height width name
  python3 scripts/torch_dense_baseline.py --d-model 512 --heads 8 --layers 6 --d-ff 2048 \
      --dtype "$1" --seq "$2" --batch "$3" --height "$4" --width "$5" --steps 20 --warmup 5 \
      --json "$RUNS/$6.json" > "$RUNS/$6.log" 2>&1
  echo "$6: exit $?" | tee -a $RUNS/done.txt
}

ours experiments/image/cifar10.toml speed cifar-f32
ours experiments/image/cifar10.toml speed-bf16 cifar-bf16
[ -n "${BASE:-}" ] && ours experiments/image/cifar10.toml speed-bf16 cifar-bf16-base "" gpu-bin/base
if [ "${ABLATION:-0}" = 1 ]; then
  ours experiments/image/cifar10.toml speed-bf16 cifar-bf16-attn --no-fused-layers
  ours experiments/image/cifar10.toml speed-bf16 cifar-bf16-generic --no-fused
fi
torch float32 3072 32 32 32 torch-cifar-f32
torch bfloat16 3072 32 32 32 torch-cifar-bf16
ours experiments/image/imagenet64.toml speed in64-f32
ours experiments/image/imagenet64.toml speed-bf16 in64-bf16
[ -n "${BASE:-}" ] && ours experiments/image/imagenet64.toml speed-bf16 in64-bf16-base "" gpu-bin/base
if [ "${ABLATION:-0}" = 1 ]; then
  ours experiments/image/imagenet64.toml speed-bf16 in64-bf16-attn --no-fused-layers
  ours experiments/image/imagenet64.toml speed-bf16 in64-bf16-generic --no-fused
fi
torch float32 12288 8 64 64 torch-in64-f32
torch bfloat16 12288 8 64 64 torch-in64-bf16

python3 - "$RUNS" "$OUT" "$BACKEND" "$($BIN --version)" "$([ -n "${BASE:-}" ] && gpu-bin/base --version)" <<'PY'
import json, re, statistics, sys, os
runs, out, backend, version, base_version = sys.argv[1:6]
def ours(name):
    try:
        lines = [json.loads(l) for l in open(f"{runs}/{name}/metrics.jsonl") if l.strip()]
    except OSError:
        return None
    tps = [l["tokens_per_s"] for l in lines if l["step"] > 10 and l.get("valid_loss") is None]
    return statistics.median(tps) if tps else None
def torch(name):
    try:
        return json.load(open(f"{runs}/{name}.json"))["tokens_per_s"]
    except (OSError, KeyError, ValueError):
        return None
gpu = open(f"{runs}/gpu.txt").read().strip()
# the binary's own build commit (the GPU host's checkout may be stale)
commit = (re.search(r"commit ([^)]+)", version) or re.search("(.*)", version)).group(1)
rows, data = [], {}
for shape, key in [("CIFAR-10, L = 3072, batch 32", "cifar"), ("ImageNet-64, L = 12288, batch 8", "in64")]:
    o32, o16 = ours(f"{key}-f32"), ours(f"{key}-bf16")
    t32, t16 = torch(f"torch-{key}-f32"), torch(f"torch-{key}-bf16")
    data[key] = dict(ours_f32=o32, ours_bf16=o16, torch_f32=t32, torch_bf16=t16)
    f = lambda v: "failed" if v is None else f"{v/1e3:,.0f}k"
    r = lambda a, b: "-" if a is None or b is None else f"{a/b:.2f}x"
    rows.append(f"| {shape} | {f(o32)} | {f(o16)} | {f(t32)} | {f(t16)} | {r(o32, t32)} | {r(o16, t16)} |")
md = [f"# Training tokens/s, 6 x 512, 8 heads: Combiner-Axial (burn-{backend}) vs dense SDPA (PyTorch)", "",
      f"GPU: {gpu}; binary commit {commit}; ours: median tokens/s of steps 11+; PyTorch: 20 timed steps after 5 warm-up.", "",
      "| shape | ours f32 | ours bf16 | PyTorch f32 | PyTorch bf16 autocast | f32 ratio | bf16 ratio |",
      "|---|---:|---:|---:|---:|---:|---:|"] + rows
open(f"{out}/speed.md", "w").write("\n".join(md) + "\n")
json.dump(dict(gpu=gpu, commit=commit, backend=backend, shapes=data), open(f"{out}/speed.json", "w"), indent=1)
abl = []
for shape, key in [("CIFAR-10, L = 3072, batch 32", "cifar"), ("ImageNet-64, L = 12288, batch 8", "in64")]:
    g, a, o, t = ours(f"{key}-bf16-generic"), ours(f"{key}-bf16-attn"), ours(f"{key}-bf16"), torch(f"torch-{key}-bf16")
    if g is None and a is None:
        continue
    data[key].update(ours_bf16_generic=g, ours_bf16_attention_kernel=a)
    f = lambda v: "failed" if v is None else f"{v/1e3:,.0f}k" + ("" if t is None else f" ({v/t:.2f}x)")
    abl.append(f"| {shape} | {f(g)} | {f(a)} | {f(o)} |")
if base_version:
    bc = (re.search(r"commit ([^)]+)", base_version) or re.search("(.*)", base_version)).group(1)
    md += ["", f"bf16 against binary {bc} in the same call (ratio to PyTorch bf16 autocast):", "",
           f"| shape | {bc} | {commit} |", "|---|---:|---:|"]
    for shape, key in [("CIFAR-10, L = 3072, batch 32", "cifar"), ("ImageNet-64, L = 12288, batch 8", "in64")]:
        b, o, t = ours(f"{key}-bf16-base"), ours(f"{key}-bf16"), torch(f"torch-{key}-bf16")
        data[key].update(base_bf16=b, base_commit=bc)
        f = lambda v: "failed" if v is None else f"{v/1e3:,.0f}k" + ("" if t is None else f" ({v/t:.2f}x)")
        md.append(f"| {shape} | {f(b)} | {f(o)} |")
    open(f"{out}/speed.md", "w").write("\n".join(md) + "\n")
    json.dump(dict(gpu=gpu, commit=commit, backend=backend, shapes=data), open(f"{out}/speed.json", "w"), indent=1)
if abl:
    md += ["", "bf16 by kernel (ratio to PyTorch bf16 autocast):", "",
           "| shape | generic ops (`--no-fused`) | fused attention (`--no-fused-layers`) | fused attention + layers |",
           "|---|---:|---:|---:|"] + abl
    open(f"{out}/speed.md", "w").write("\n".join(md) + "\n")
    json.dump(dict(gpu=gpu, commit=commit, backend=backend, shapes=data), open(f"{out}/speed.json", "w"), indent=1)
print("\n".join(md))
PY
tar czf "$OUT/speed-logs.tar.gz" -C $RUNS --exclude checkpoints .
