#!/usr/bin/env python3
"""Training throughput of a PyTorch dense transformer of the same size as a
`combiner` image model, with F.scaled_dot_product_attention (flash), for a
side-by-side tokens/s comparison on the same GPU.

The model mirrors combiner-models' ImageAr: 257-way value embedding plus
row/column/channel position embeddings, pre-norm blocks (LayerNorm ->
causal attention -> residual, LayerNorm -> GELU MLP -> residual), final
LayerNorm and a 256-way head, AdamW with gradient clipping at 1.0.
Inputs are random sub-pixel values (throughput does not depend on them).

  python3 scripts/torch_dense_baseline.py --d-model 256 --heads 8 --layers 4 --d-ff 1024 \
      --batch 16 --seq 3072 --steps 30 --dtype float32
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.h = h
        self.n1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d)
        self.f1 = nn.Linear(d, ff)
        self.f2 = nn.Linear(ff, d)

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = self.qkv(self.n1(x)).split(d, dim=2)
        q, k, v = (t.view(b, l, self.h, d // self.h).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, l, d))
        return x + self.f2(F.gelu(self.f1(self.n2(x))))


class ImageAr(nn.Module):
    def __init__(self, d, h, layers, ff, height=32, width=32, channels=3):
        super().__init__()
        self.values = nn.Embedding(257, d)
        self.rows = nn.Embedding(height, d)
        self.cols = nn.Embedding(width, d)
        self.chans = nn.Embedding(channels, d)
        self.blocks = nn.ModuleList([Block(d, h, ff) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)
        self.w, self.c = width, channels

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=x.device)
        per_row = self.w * self.c
        h = self.values(x) + self.rows(pos // per_row) + self.cols((pos % per_row) // self.c) + self.chans(pos % self.c)
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm(h))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=3072)
    p.add_argument("--height", type=int, default=32, help="image rows (ImageNet-64: 64)")
    p.add_argument("--width", type=int, default=32, help="image columns (ImageNet-64: 64)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--json", default=None)
    p.add_argument("--profile", default=None,
                   help="also write the CUDA kernels of 3 profiled steps (torch.profiler) to this file")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    assert a.seq <= a.height * a.width * 3, "--seq exceeds height x width x 3"
    model = ImageAr(a.d_model, a.heads, a.layers, a.d_ff, a.height, a.width).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randint(0, 256, (a.batch, a.seq), device=dev, generator=gen)
    inp = torch.cat([torch.full((a.batch, 1), 256, device=dev), x[:, :-1]], 1)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if a.dtype == "bfloat16" else torch.autocast("cuda", enabled=False)

    def step():
        with ctx:
            loss = F.cross_entropy(model(inp).float().reshape(-1, 256), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    tps = a.batch * a.seq * a.steps / dt
    out = {
        "impl": "pytorch-dense-sdpa",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
        "dtype": a.dtype,
        "d_model": a.d_model, "heads": a.heads, "layers": a.layers, "d_ff": a.d_ff,
        "batch": a.batch, "seq": a.seq, "steps": a.steps,
        "ms_per_step": 1e3 * dt / a.steps,
        "tokens_per_s": tps,
        "final_loss": float(loss),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(json.dumps(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        kernels = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                k = kernels.setdefault(e.name, [0.0, 0])
                k[0] += e.device_time / 3e3
                k[1] += 1
        total = sum(ms for ms, _ in kernels.values())
        with open(a.profile, "w") as f:
            f.write(f"{sum(n for _, n in kernels.values()) / 3:.0f} kernels a step, {total:.1f} ms a step (torch.profiler, 3 steps)\n")
            for name, (ms, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:40]:
                f.write(f"{100 * ms / total:5.1f}% {ms:9.2f} ms {n / 3:7.1f}x  {name[:100]}\n")


if __name__ == "__main__":
    main()
