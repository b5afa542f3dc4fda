#!/usr/bin/env python3
"""Which PyTorch attention kernel runs the terms of Combiner-Axial row-major
fastest at the paper's ablation shapes (8 heads, head dim 64, bf16), forward
and forward+backward, so that the tch kernel (`crates/cli/src/kernels`) can
pick one per term from a measurement on the GPU it runs on.

Terms (grid `rows x cols`, `b` sequences):
  row       every row's tokens over their own row, causal:
            [b * rows, cols] queries over [b * rows, cols] keys
  expect    the same rows without the mask (the local expectations)
  column    every column's tokens over the span keys of the rows above,
            strictly causal: [b, rows] queries of `cols * heads` heads over
            `rows` keys shared by the columns (a stride-0 view), as
            memory-efficient attention with an additive mask (what the
            kernel runs now), as FlashAttention with the causal mask aligned
            to the bottom right over keys `0..rows-1` (query r then sees
            keys r' < r: strict causality without a mask; query 0 sees none),
            as memory-efficient attention with that mask as its own mask
            type (no bias read), as cuDNN with the mask, and in plain
            operations (logits of the shared keys in one product per
            sequence and head, f32 softmax, values contracted per column)

Each variant is checked against dense math in f32 (outputs of rows that see
no key compared as zeros) before it is timed.

  python3 scripts/bench_blocks_torch.py --batch 32 --rows 32 --cols 96 --json blocks.json
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def timed(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(1e3 * (time.perf_counter() - t))
    return statistics.median(ts)


def reference(q, k, v, allowed, scale):
    """Dense f32 attention of [B, H, M, D] q over [B, H, N, D] k, v; rows without keys give 0."""
    s = torch.einsum("bhmd,bhnd->bhmn", q.float(), k.float()) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("bhmn,bhnd->bhmd", p, v.float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--cols", type=int, default=96)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    b, r, c, h, d = a.batch, a.rows, a.cols, a.heads, a.head_dim
    scale = d ** -0.5
    gen = torch.Generator(device=dev).manual_seed(0)
    rnd = lambda *s: torch.randn(*s, device=dev, dtype=dt, generator=gen)  # noqa: E731
    results = []

    def record(term, kernel, fn, check):
        entry = {"term": term, "kernel": kernel}
        try:
            out = fn()
            entry["max_abs_err"] = float(check(out))
            entry["forward_ms"] = timed(lambda: fn(grad=False), a.repeats, a.warmup)
            entry["forward_backward_ms"] = timed(lambda: fn(grad=True), a.repeats, a.warmup)
        except Exception as e:  # a kernel that refuses the shape is recorded, not fatal
            entry["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        print(json.dumps(entry), flush=True)
        results.append(entry)

    # row and expect terms: [b * rows, heads, cols, d] as the kernel's [B, H, M, D] view of [B, M, H, D]
    q, k, v = (rnd(b * r, c, h, d).transpose(1, 2).requires_grad_() for _ in range(3))
    go = rnd(b * r, c, h, d).transpose(1, 2)
    causal = torch.ones(c, c, dtype=torch.bool, device=dev).tril()
    for term, is_causal in (("row", True), ("expect", False)):
        allowed = causal if is_causal else torch.ones_like(causal)
        ref = reference(q[:64], k[:64], v[:64], allowed, scale)
        for name, backend in BACKENDS.items():
            def run(grad=None, backend=backend, is_causal=is_causal):
                with sdpa_kernel(backend):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
                if grad:
                    torch.autograd.grad(o, (q, k, v), go)
                return o
            record(term, name, run, lambda o: (o[:64].float() - ref).abs().max())

    # column term: [b, cols * heads, rows, d] queries; keys [b, rows, heads, d] shared by the columns
    qc = rnd(b, r, c * h, d).transpose(1, 2).requires_grad_()
    kspan = rnd(b, r, 1, h, d).requires_grad_()
    vc = rnd(b, r, c * h, d).transpose(1, 2).requires_grad_()
    goc = rnd(b, r, c * h, d).transpose(1, 2)
    kc = lambda: kspan.expand(b, r, c, h, d).reshape(b, r, c * h, d).transpose(1, 2)  # noqa: E731
    strict = torch.ones(r, r, dtype=torch.bool, device=dev).tril(-1)
    ref = reference(qc[:2], kc()[:2], vc[:2], strict, scale)
    bias = torch.zeros(r, (r + 15) // 16 * 16, dtype=dt, device=dev)
    bias[:, :r].masked_fill_(~strict, float("-inf"))
    bias = bias[:, :r].expand(b, c * h, r, r)

    def masked(backend):
        def run(grad=None):
            with sdpa_kernel(backend):
                o = F.scaled_dot_product_attention(qc, kc(), vc, attn_mask=bias, scale=scale)
            if grad:
                torch.autograd.grad(o, (qc, kspan, vc), goc)
            return o.nan_to_num(0.0)
        return run

    def lower_right(grad=None):
        ks, vs = kc()[:, :, : r - 1], vc[:, :, : r - 1]
        o = torch.ops.aten._scaled_dot_product_flash_attention(qc, ks, vs, 0.0, True, False, scale=scale)[0]
        if grad:
            torch.autograd.grad(o, (qc, kspan, vc), goc)
        return o

    def efficient_lower_right(grad=None):
        # the kernel's [B, M, H, K] layout; mask type 2: causal from the bottom right
        ks, vs = kc()[:, :, : r - 1], vc[:, :, : r - 1]
        o = torch.ops.aten._efficient_attention_forward(
            qc.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2), None, None, None,
            r, r - 1, 0.0, 2, True, scale=scale)[0].transpose(1, 2)
        if grad:
            torch.autograd.grad(o, (qc, kspan, vc), goc)
        return o.nan_to_num(0.0)

    def plain(grad=None):
        # [b, h, rows * cols, d] queries over the [b, h, rows, d] span keys in one product
        q5 = qc.transpose(1, 2).reshape(b, r, c, h, d).permute(0, 3, 1, 2, 4).reshape(b, h, r * c, d)
        ks = kspan[:, :, 0].permute(0, 2, 1, 3)
        s_ = (q5 @ ks.transpose(-1, -2)).float().view(b, h, r, c, r) * scale
        s_ = s_.masked_fill(~strict.view(1, 1, r, 1, r), float("-inf"))
        p_ = torch.softmax(s_, -1).nan_to_num(0.0).to(dt)
        # per column: [rows, rows] probabilities over the column's values
        v5 = vc.transpose(1, 2).reshape(b, r, c, h, d)
        o = torch.einsum("bhrcs,bschd->brchd", p_, v5).reshape(b, r, c * h, d).transpose(1, 2)
        if grad:
            torch.autograd.grad(o, (qc, kspan, vc), goc)
        return o

    check = lambda o: (o[:2].float() - ref).abs().max()  # noqa: E731
    record("column", "efficient+mask", masked(SDPBackend.EFFICIENT_ATTENTION), check)
    record("column", "efficient-lower-right", efficient_lower_right, check)
    record("column", "plain-ops", plain, check)
    record("column", "cudnn+mask", masked(SDPBackend.CUDNN_ATTENTION), check)
    record("column", "flash-lower-right", lower_right, check)
    lse = torch.ops.aten._scaled_dot_product_flash_attention(
        qc, kc()[:, :, : r - 1], vc[:, :, : r - 1], 0.0, True, False, scale=scale)[1]
    print(json.dumps({"flash-lower-right lse of query 0 (sees no key)": float(lse[0, 0, 0]),
                      "of query 1": float(lse[0, 0, 1])}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "shape": vars(a), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
