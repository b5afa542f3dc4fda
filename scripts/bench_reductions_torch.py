#!/usr/bin/env python3
"""Two full-size passes of a bf16 training step of the tch backend, each
written several ways with PyTorch operations, timed on one GPU (median of
synchronized repeats), so that `crates/cli/src/kernels` uses the fastest:

  merge   the joint softmax's two terms, `o = o1 w1 + o2 w2` with
          `w_t = exp(lse_t - lse)` one f32 weight per (position, head) row:
          f32 weights in `mul` + `addcmul` (mixed dtypes), bf16 weights in the
          same two passes, and one `lerp(o2, o1, w1)` (w2 = 1 - w1)
  bias    the bias gradient of a linear layer, the column sums of a
          `[rows, width]` bf16 gradient: `sum(0)`, `ones @ g` (cuBLAS) and
          `g.t() @ ones`

Every variant is checked against an f32 computation first.

  python3 scripts/bench_reductions_torch.py --rows 786432 --json reductions.json
"""
import argparse
import json
import statistics
import time

import torch


def timed(fn, repeats=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(1e6 * (time.perf_counter() - t))
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32 * 3072 * 8, help="positions x heads (merge)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32 * 3072, help="rows of the bias gradient")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev, bf = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    out = []

    def record(kind, name, fn, ref):
        y = fn()
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        e = {"pass": kind, "variant": name, "us": timed(fn), "rel_max_err": err}
        print(json.dumps(e), flush=True)
        out.append(e)

    n, d = a.rows, a.head_dim
    o1 = torch.randn(n, d, device=dev, generator=g).to(bf)
    o2 = torch.randn(n, d, device=dev, generator=g).to(bf)
    l1 = torch.randn(n, device=dev, generator=g)
    l2 = torch.randn(n, device=dev, generator=g)
    lse = torch.logaddexp(l1, l2)
    w1, w2 = (l1 - lse).exp().unsqueeze(1), (l2 - lse).exp().unsqueeze(1)
    ref = o1.float() * w1 + o2.float() * w2
    res = torch.empty(n, d, device=dev, dtype=bf)

    def f32_weights():
        torch.mul(o1, w1, out=res)
        return res.addcmul_(o2, w2)

    def bf16_weights():
        torch.mul(o1, w1.to(bf), out=res)
        return res.addcmul_(o2, w2.to(bf))

    record("merge", "f32 weights, mul + addcmul", f32_weights, ref)
    record("merge", "bf16 weights, mul + addcmul", bf16_weights, ref)
    record("merge", "lerp(o2, o1, bf16 w1)", lambda: torch.lerp(o2, o1, w1.to(bf)), ref)

    for width in (512, 2048):
        grad = torch.randn(a.tokens, width, device=dev, generator=g).to(bf)
        ref = grad.float().sum(0)
        ones = torch.ones(1, a.tokens, device=dev, dtype=bf)
        record("bias", f"sum(0), width {width}", lambda: grad.sum(0), ref)
        record("bias", f"ones @ g, width {width}", lambda: (ones @ grad).squeeze(0), ref)
        record("bias", f"g.t() @ ones, width {width}", lambda: grad.t() @ ones.squeeze(0), ref)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "shape": vars(a), "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
