#!/usr/bin/env python3
"""Compare `combiner plan apply` with an independent NumPy Combiner-Fixed.

Writes random q, k, v to a safetensors file, runs the `combiner` binary on
them and checks its `out` against a dense NumPy implementation of
Combiner-Fixed (paper eq. 7 with the joint softmax of eq. 9, block size
s = ceil(sqrt(L)) unless --block is given) in LM and MLM mode, with max and
mean abstractions; and against a NumPy Combiner-Axial row-major with the
authors' learned summary (span key W1 LayerNorm(x + W0 vbar), random x and
weights in the same file). Every plan is also checked against the binary's
own dense oracle (`--oracle`).

Needs only NumPy; safetensors files are read and written by hand (the
format is an 8-byte header length, a JSON header and raw little-endian data).

    python3 crates/cli/scripts/compare_plan_apply.py --binary target/release/combiner
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

PLANS = ["fixed", "logsparse", "axial-vertical", "axial-horizontal",
         "axial-rowmajor", "mixture", "mixture-joint", "learnable"]


def save(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


def softmax(x):
    x = x - x.max()
    e = np.exp(x)
    return e / e.sum()


def fixed_reference(q, k, v, mode, pool, block):
    """Combiner-Fixed, one query at a time, straight from the paper's sets."""
    b, h, L, d = q.shape
    s = block if block else math.isqrt(L - 1) + 1 if L > 1 else 1  # ceil(sqrt(L))
    scale = 1.0 / math.sqrt(d)
    reduce = np.max if pool == "max" else np.mean
    out = np.zeros_like(q, dtype=np.float64)
    blocks = [list(range(a, min(a + s, L))) for a in range(0, L, s)]
    for bi in range(b):
        for hi in range(h):
            Q, K, V = (x[bi, hi].astype(np.float64) for x in (q, k, v))
            for i in range(L):
                own = i // s
                direct = [j for j in blocks[own] if mode == "mlm" or j <= i]
                spans = [blocks[c] for c in range(len(blocks))
                         if c != own and (mode == "mlm" or c < own)]
                logits = [Q[i] @ K[j] * scale for j in direct]
                vbars = []
                for m in spans:
                    q_span, k_span = reduce(Q[m], axis=0), reduce(K[m], axis=0)
                    local = softmax(np.array([q_span @ K[j] * scale for j in m]))
                    vbars.append(local @ V[m])
                    logits.append(Q[i] @ k_span * scale)
                p = softmax(np.array(logits))
                o = sum(p[t] * V[j] for t, j in enumerate(direct))
                o = o + sum(p[len(direct) + r] * vb for r, vb in enumerate(vbars))
                out[bi, hi, i] = o
    return out


def learned_rowmajor_reference(q, k, v, x, w0, scale_ln, bias_ln, w1, mode, rows, cols):
    """Combiner-Axial row-major with the learned summary, cell by cell."""
    b, h, L, d = q.shape
    sc = 1.0 / math.sqrt(d)
    out = np.zeros_like(q, dtype=np.float64)
    q, k, v, x = (t.astype(np.float64) for t in (q, k, v, x))
    for bi in range(b):
        vbar = np.zeros((rows, cols, h, d))
        key = np.zeros((rows, cols, h, d))
        for r2 in range(rows):
            members = [r2 * cols + c2 for c2 in range(cols) if r2 * cols + c2 < L]
            if not members:
                continue
            for c in range(cols):
                t = min(r2 * cols + c, L - 1)  # a cell past the end uses the last token
                for hi in range(h):
                    p = softmax(np.array([q[bi, hi, t] @ k[bi, hi, j] * sc for j in members]))
                    vbar[r2, c, hi] = p @ v[bi, hi, members]
                y = x[bi, t] + np.einsum("hd,hdm->m", vbar[r2, c], w0)
                y = (y - y.mean()) / np.sqrt(y.var() + 1e-6) * scale_ln + bias_ln
                key[r2, c] = np.einsum("m,mhd->hd", y, w1)
        for hi in range(h):
            for i in range(L):
                r, c = divmod(i, cols)
                direct = [r * cols + c2 for c2 in range(cols)
                          if r * cols + c2 < L and (mode == "mlm" or c2 <= c)]
                others = [r2 for r2 in range(rows) if r2 != r and r2 * cols < L
                          and (mode == "mlm" or r2 < r)]
                logits = [q[bi, hi, i] @ k[bi, hi, j] * sc for j in direct]
                logits += [q[bi, hi, i] @ key[r2, c, hi] * sc for r2 in others]
                p = softmax(np.array(logits))
                o = sum(p[a] * v[bi, hi, j] for a, j in enumerate(direct))
                o = o + sum(p[len(direct) + a] * vbar[r2, c, hi] for a, r2 in enumerate(others))
                out[bi, hi, i] = o
    return out


def run(binary, plan, mode, pool, inp, outp, extra=()):
    cmd = [binary, "plan", "apply", "--plan", plan, "--mode", mode,
           "--abstraction", pool, "--input", inp, "--output", outp, "--oracle", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return load(outp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default="target/release/combiner")
    ap.add_argument("--shape", default="2,3,50,16", help="batch,heads,seq,d_head")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    shape = tuple(int(x) for x in args.shape.split(","))
    rng = np.random.default_rng(args.seed)
    qkv = {n: rng.standard_normal(shape).astype(np.float32) for n in "qkv"}
    worst, failed = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "qkv.safetensors")
        save(inp, qkv)
        for mode in ("lm", "mlm"):
            for pool in ("max", "mean"):
                got = run(args.binary, "fixed", mode, pool, inp, os.path.join(tmp, "o.safetensors"))
                ref = fixed_reference(qkv["q"], qkv["k"], qkv["v"], mode, pool, None)
                diff = float(np.abs(got["out"] - ref).max())
                worst = max(worst, diff)
                status = "ok" if diff <= args.tol else "FAIL"
                print(f"fixed [{mode}, {pool}] vs numpy: max |diff| = {diff:.2e} {status}")
                if diff > args.tol:
                    failed.append(f"fixed [{mode}, {pool}] vs numpy")
            for plan in PLANS:
                got = run(args.binary, plan, mode, "max", inp, os.path.join(tmp, "o.safetensors"))
                diff = float(np.abs(got["out"] - got["oracle"]).max())
                status = "ok" if diff <= args.tol else "FAIL"
                print(f"{plan} [{mode}, max] vs oracle: max |diff| = {diff:.2e} {status}")
                if diff > args.tol:
                    failed.append(f"{plan} [{mode}] vs oracle")
        # the learned row summary: x and weights beside q, k, v
        b, h, L, d = shape
        dm = h * d
        learned = dict(qkv)
        learned["x"] = rng.standard_normal((b, L, dm)).astype(np.float32)
        learned["w0"] = (rng.standard_normal((h, d, dm)) / math.sqrt(dm)).astype(np.float32)
        learned["ln_scale"] = (1.0 + 0.5 * rng.standard_normal(dm)).astype(np.float32)
        learned["ln_bias"] = (0.5 * rng.standard_normal(dm)).astype(np.float32)
        learned["w1"] = (rng.standard_normal((dm, h, d)) / math.sqrt(dm)).astype(np.float32)
        inp = os.path.join(tmp, "qkvxw.safetensors")
        save(inp, learned)
        cols = math.isqrt(L - 1) + 1 if L > 1 else 1
        rows = -(-L // cols)
        for mode in ("lm", "mlm"):
            got = run(args.binary, "axial-rowmajor-learned", mode, "max", inp,
                      os.path.join(tmp, "o.safetensors"), ("--grid", f"{rows}x{cols}"))
            ref = learned_rowmajor_reference(*(learned[n] for n in
                                               ("q", "k", "v", "x", "w0", "ln_scale", "ln_bias", "w1")),
                                             mode, rows, cols)
            for name, other in (("numpy", ref), ("oracle", got["oracle"])):
                diff = float(np.abs(got["out"] - other).max())
                worst = max(worst, diff)
                status = "ok" if diff <= args.tol else "FAIL"
                print(f"axial-rowmajor-learned [{mode}] vs {name}: max |diff| = {diff:.2e} {status}")
                if diff > args.tol:
                    failed.append(f"axial-rowmajor-learned [{mode}] vs {name}")
    if failed:
        print("failed: " + ", ".join(failed))
        sys.exit(1)
    print(f"all comparisons within {args.tol:g} (shape {shape})")


if __name__ == "__main__":
    main()
