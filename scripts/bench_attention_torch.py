#!/usr/bin/env python3
"""Time one PyTorch attention call per model and length (companion of `combiner bench attention`).

Models: the four SDPA backends (flash, cuDNN, memory-efficient, math), each
forced with sdpa_kernel, a naive dense softmax(q k^T / sqrt(d)) v, and
`sdpa-layer`: a whole multi-head attention layer (q/k/v and output
projections around SDPA with PyTorch's own kernel choice), the unit that
`combiner bench attention` times.

For every model and length, q, k, v are random [batch, heads, L, head_dim]
tensors with requires_grad (for sdpa-layer: x is [batch, L, heads * head_dim]).
Forward runs under torch.no_grad (inference, as Figure 3 of the paper and
our side). Forward and forward+backward (backward of
(out * grad).sum() with a fixed random grad) are each the median over
--repeats synchronized calls after --warmup warm-up calls; peak_bytes is the
device memory a separate forward+backward call allocates on top of what was
allocated before it (null on the CPU). A backend that cannot run at a
dtype/shape/device is recorded as "unsupported: ...", an out-of-memory as
"oom", and a model's lengths after its first OOM as "oom (skipped after L=...)".
The JSON has the schema the Rust side writes, so the two can be merged.

  python3 scripts/bench_attention_torch.py --lengths 1024,2048,4096,8192,16384 \
      --dtype bf16 --mode lm --out results/attention_torch.json
"""
import argparse
import json
import math
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
SDPA_BACKENDS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}
MODELS = list(SDPA_BACKENDS) + ["naive-dense", "sdpa-layer"]


class Layer(torch.nn.Module):
    """Multi-head attention layer: fused q/k/v projection, SDPA, output projection."""

    def __init__(self, heads, head_dim):
        super().__init__()
        d = heads * head_dim
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.out = torch.nn.Linear(d, d)

    def forward(self, x, causal):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Unsupported(Exception):
    pass


def naive_dense(q, k, v, causal):
    """softmax(q k^T / sqrt(d) + mask) v, with the L x L scores materialized (softmax in f32)."""
    scores = (q @ k.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        n = q.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v


def attention_fn(model, causal):
    if model == "naive-dense":
        return lambda q, k, v: naive_dense(q, k, v, causal)
    backend = SDPA_BACKENDS[model]

    def run(q, k, v):
        # SDPA explains why a kernel was refused in warnings, then raises
        # "No available kernel"; keep those reasons for the status line.
        with sdpa_kernel(backend), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            except RuntimeError as e:
                if is_oom(e):
                    raise
                why = [str(w.message).split("\n")[0] for w in caught]
                raise Unsupported("; ".join(dict.fromkeys([str(e).split("\n")[0]] + why))) from e

    return run


def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeats):
    """Median wall time in ms of fn() over `repeats` synchronized calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(model, length, a, device, dtype):
    """One (model, length) result row; raises Unsupported or an OOM error."""
    gen = torch.Generator(device=device).manual_seed(length)
    shape = (a.batch, a.heads, length, a.head_dim)

    def rand():
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)

    causal = a.mode == "lm"
    if model == "sdpa-layer":
        layer = Layer(a.heads, a.head_dim).to(device=device, dtype=dtype)
        x = torch.randn((a.batch, length, a.heads * a.head_dim), generator=gen, device=device,
                        dtype=dtype).requires_grad_()
        grad = torch.randn(x.shape, generator=gen, device=device, dtype=dtype)
        inputs = (x, *layer.parameters())

        def call():
            return layer(x, causal)
    else:
        q, k, v = (rand().requires_grad_() for _ in range(3))
        grad = rand()
        inputs = (q, k, v)
        attn = attention_fn(model, causal)

        def call():
            return attn(q, k, v)

    def fwd():
        with torch.no_grad():
            return call()

    def fwd_bwd():
        # autograd.grad returns the gradients instead of accumulating into .grad,
        # so every call allocates (and frees) the same memory.
        return torch.autograd.grad(call(), inputs, grad)

    fwd()  # probe: an unsupported backend fails here before any timing
    forward_ms = timed(fwd, device, a.warmup, a.repeats)
    forward_backward_ms = timed(fwd_bwd, device, a.warmup, a.repeats)
    peak = None
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fwd_bwd()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    return {"status": "ok", "forward_ms": forward_ms, "forward_backward_ms": forward_backward_ms, "peak_bytes": peak}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--mode", default="lm", choices=["lm", "mlm"], help="lm = causal, mlm = bidirectional")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--out", default="results.json")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    a = p.parse_args()
    lengths = [int(x) for x in a.lengths.split(",") if x.strip()]
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {','.join(MODELS)}")
    if a.repeats < 1:
        p.error("--repeats must be at least 1")
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype]
    torch.backends.cuda.matmul.allow_tf32 = False

    results = []
    for model in models:
        oom_at = None
        for length in lengths:
            row = {"model": model, "length": length, "status": None,
                   "forward_ms": None, "forward_backward_ms": None, "peak_bytes": None}
            if oom_at is not None:
                row["status"] = f"oom (skipped after L={oom_at})"
            else:
                try:
                    row.update(measure(model, length, a, device, dtype))
                except Unsupported as e:
                    row["status"] = f"unsupported: {e}"
                except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
                    if is_oom(e):
                        row["status"], oom_at = "oom", length
                    elif model in SDPA_BACKENDS:  # e.g. a backward kernel that refuses the shape
                        row["status"] = "unsupported: " + str(e).split("\n")[0]
                    else:
                        raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            results.append(row)
            if row["status"] == "ok":
                peak = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.1f} MiB"
                line = f"fwd {row['forward_ms']:9.3f} ms  fwd+bwd {row['forward_backward_ms']:9.3f} ms  peak {peak}"
            else:
                line = row["status"]
            print(f"{model:<15} L={length:<7} {line}", file=sys.stderr, flush=True)

    out = {
        "implementation": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": a.dtype, "mode": a.mode, "batch": a.batch, "heads": a.heads, "head_dim": a.head_dim,
        "warmup": a.warmup, "repeats": a.repeats,
        "results": results,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
