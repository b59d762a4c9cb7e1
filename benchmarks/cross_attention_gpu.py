"""One decoder layer's cross-attention on the GPU, the two ways speechcore runs it, side by side:
the K/V path (attention_decode over per-layer K | V of 2 x 1500 x 1280 per window) and the
absorbed path (attention_absorbed over the window's encoder output, with and without its two
per-head products). Large-v3 shape, bf16, each row against its own 30 s window, timing only
(constant inputs). Prints microseconds per call, the bytes each path must read at least, the
achieved bandwidth and the ratio.

    python benchmarks/cross_attention_gpu.py [--rows 1,16,64,128,256] [--iters 20]
"""

from __future__ import annotations

import argparse

from speechcore import _C


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,16,64,128,256")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--t", type=int, default=1500)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    ops = _C.cuda_ops
    h, d, t = args.heads, args.dim, args.t
    print(f"cross-attention of one layer: {h} heads, model dimension {d}, {t} frames, {args.dtype}")
    print(f"{'rows':>5} | {'K/V us':>8} {'TB/s':>5} | {'absorbed us':>11} {'TB/s':>5} | {'+ products us':>13} | "
          f"{'K/V / absorbed+products':>23}")
    for rows in (int(r) for r in args.rows.split(",")):
        kv_ms = ops.attention_decode_benchmark(rows, h, d // h, t, args.dtype, args.iters)
        ab_ms = ops.attention_absorbed_benchmark(rows, h, d, t, args.dtype, args.iters)
        full_ms = ops.attention_absorbed_benchmark(rows, h, d, t, args.dtype, args.iters, products=True)
        kv_bytes = rows * t * 2 * d * 2
        ab_bytes = rows * t * d * 2
        print(f"{rows:5d} | {kv_ms * 1e3:8.1f} {kv_bytes / kv_ms / 1e9:5.2f} | {ab_ms * 1e3:11.1f} "
              f"{ab_bytes / ab_ms / 1e9:5.2f} | {full_ms * 1e3:13.1f} | {kv_ms / full_ms:22.2f}x")


if __name__ == "__main__":
    main()
