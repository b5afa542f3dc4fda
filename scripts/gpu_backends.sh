#!/usr/bin/env bash
# Every GPU backend against ndarray on identical inputs, in one job:
# - training: one ndarray run of the CIFAR-10 `check` preset stops after step 1;
#   each backend resumes a copy of it (same weights, optimizer state and data
#   position) for steps 2..21; its losses are compared with ndarray's.
# - `plan apply`: Combiner-Axial row-major (LM) and Combiner-Fixed (MLM) on the
#   same random q, k, v; outputs compared with ndarray's.
# Tolerances (f32 everywhere): losses within 1e-3 relative, attention outputs
# within 1e-4 absolute (2e-3 on cuda, whose f32 matmul uses TF32). Also reports each backend's wall time (cuda's first
# run includes NVRTC compilation and autotuning: its warm-up).
# Needs gpu-bin/ with a binary built with --features tch,cuda,wgpu and
# cifar10-jpeg.tar.xz, and .gl/ for wgpu (carry = ["gpu-bin", ".gl"]).
# Writes $OUT/backends.md, backends.json and logs.
source "$(dirname "$0")/gpu_env.sh"
# wgpu needs the Vulkan loader and the GL vendor-neutral libraries the
# driver's ICD (libGLX_nvidia.so.0) links against; the GPU image has neither.
# Carry them as Debian packages in .gl/ (ignored by git), fetched once on the
# build machine:
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   mkdir -p .gl /tmp/amd64/partial; apt-get $o update
#   (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
[ -d /usr/local/nvidia/lib64 ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/nvidia/lib64
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda} CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
BACKENDS=${BACKENDS:-"ndarray tch cuda wgpu"}
DATA=${DATA:-/tmp/data}
W=/tmp/backends
rm -rf $W && mkdir -p $W
$BIN data prepare cifar10 --from gpu-bin/cifar10-jpeg.tar.xz --data-dir $DATA 2>&1 | tail -1
CFG=experiments/image/cifar10.toml
$BIN --backend ndarray train --config $CFG --preset check --run-dir $W/base --data-dir $DATA \
    --plain --stop-after 1 > $W/base.log 2>&1 || { cat $W/base.log; exit 1; }

python3 - $W <<'PY'
import json, struct, sys, random
w = sys.argv[1]
rng = random.Random(0)
b, h, l, d = 2, 4, 300, 16
def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        raw = struct.pack(f"<{len(vals)}f", *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    hj = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj))); f.write(hj); f.write(b"".join(blobs))
n = b * h * l * d
write(f"{w}/qkv.safetensors", {k: ([b, h, l, d], [rng.gauss(0, 1) for _ in range(n)]) for k in "qkv"})
PY

for be in $BACKENDS; do
  t0=$(date +%s.%N)
  cp -r $W/base $W/$be
  $BIN --backend $be train --config $CFG --preset check --run-dir $W/$be --data-dir $DATA \
      --plain --resume > $W/$be.log 2>&1
  echo "train $be: exit $?, $(python3 -c "import time;print(round(time.time()-$t0,1))") s" | tee -a $W/times.txt
  for p in "axial-rowmajor lm" "fixed mlm"; do
    set -- $p
    t0=$(date +%s.%N)
    $BIN --backend $be plan apply --plan $1 --mode $2 --input $W/qkv.safetensors \
        --output $W/apply-$1-$be.safetensors >> $W/$be.log 2>&1
    echo "apply $1 $be: exit $?, $(python3 -c "import time;print(round(time.time()-$t0,1))") s" | tee -a $W/times.txt
  done
done

python3 - $W "$OUT" "$BACKENDS" <<'PY'
import json, struct, sys, subprocess
w, out, backends = sys.argv[1], sys.argv[2], sys.argv[3].split()
def losses(be):
    try:
        return {l["step"]: l["loss"] for l in map(json.loads, filter(str.strip, open(f"{w}/{be}/metrics.jsonl"))) if l["step"] > 1}
    except OSError:
        return {}
def tensor(path, name="out"):
    try:
        raw = open(path, "rb").read()
    except OSError:
        return None
    n = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8:8 + n])[name]
    a, b = meta["data_offsets"]
    return struct.unpack(f"<{(b - a) // 4}f", raw[8 + n + a:8 + n + b])
ref = losses("ndarray")
rows, res = [], {}
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
times = open(f"{w}/times.txt").read()
for be in backends:
    got = losses(be)
    steps = sorted(set(ref) & set(got))
    rel = max((abs(got[s] - ref[s]) / abs(ref[s]) for s in steps), default=None)
    diffs = {}
    for plan in ["axial-rowmajor", "fixed"]:
        a, b = tensor(f"{w}/apply-{plan}-ndarray.safetensors"), tensor(f"{w}/apply-{plan}-{be}.safetensors")
        diffs[plan] = None if a is None or b is None else max(abs(x - y) for x, y in zip(a, b))
    # CubeCL's f32 matmul runs on TF32 tensor cores (10-bit mantissa): 2e-3
    tol = 2e-3 if be == "cuda" else 1e-4
    ok = rel is not None and len(steps) == 20 and rel < 1e-3 and all(v is not None and v < tol for v in diffs.values())
    res[be] = dict(steps=len(steps), loss_max_rel_diff=rel, apply_max_abs_diff=diffs, ok=ok)
    f = lambda v: "failed" if v is None else f"{v:.1e}"
    rows.append(f"| {be} | {len(steps)} | {f(rel)} | {f(diffs['axial-rowmajor'])} | {f(diffs['fixed'])} | {'yes' if ok else 'NO'} |")
commit = next((l.split(":", 1)[1].strip() for l in open(f"{w}/base/run.txt") if l.startswith("commit")), "unknown")
md = [f"# Backends against ndarray ({gpu}, commit {commit})", "",
      "Losses of steps 2-21 of the CIFAR-10 `check` preset resumed from one ndarray checkpoint (tolerance 1e-3 relative);",
      "`plan apply` outputs on the same q, k, v [2, 4, 300, 16] (tolerance 1e-4 absolute; cuda 2e-3: TF32 matmuls).", "",
      "| backend | steps | max rel. loss diff | axial-rowmajor LM max diff | fixed MLM max diff | within tolerance |",
      "|---|---:|---:|---:|---:|---|"] + rows + ["", "Wall times (each a fresh process; cuda includes NVRTC and autotune):", "", "```", times.strip(), "```"]
open(f"{out}/backends.md", "w").write("\n".join(md) + "\n")
json.dump(res, open(f"{out}/backends.json", "w"), indent=1)
print("\n".join(md))
PY
tar czf "$OUT/backends-logs.tar.gz" -C $W --exclude checkpoints --exclude '*.safetensors' .
