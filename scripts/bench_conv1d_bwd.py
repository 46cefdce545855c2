"""The causal conv1d backward's two paths on the GPU (kernels/causal_conv1d/triton_conv1d.py, SSMBENCH_CONV_BWD):
"fused" (one kernel that recomputes the pre-activation at every shift) against "two_pass" (g written once, then
dx), forward + backward at the Mamba block's training shapes, channel-major bf16 with SiLU and bias as the block
calls it. Medians of triton.testing.do_bench, one process; the ratio says which to make the default.

    python scripts/bench_conv1d_bwd.py [--out results/kernels/conv1d_bwd.csv]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

SHAPES = {"table1 (B64 D128 L4128)": (64, 128, 4128), "induction (B8 D128 L256)": (8, 128, 256),
          "B8 D1536 L4096": (8, 1536, 4096)}


def time_fwd_bwd(batch: int, dim: int, L: int, mode: str) -> float:
    from triton.testing import do_bench

    from ssmbench.kernels.causal_conv1d import causal_conv1d_fn

    g = torch.Generator(device="cuda").manual_seed(0)
    # channel-major: [dim, batch, L] memory viewed as [batch, dim, L], the block's layout on CUDA
    x = torch.randn(dim, batch, L, device="cuda", generator=g, dtype=torch.bfloat16).transpose(0, 1)
    x.requires_grad_()
    w = (torch.randn(dim, 4, device="cuda", generator=g) / 4).requires_grad_()
    b = torch.randn(dim, device="cuda", generator=g).requires_grad_()
    dy = torch.randn_like(x)

    def step():
        y = causal_conv1d_fn(x, w, b, activation="silu", backend="triton")
        torch.autograd.grad(y, (x, w, b), dy)

    before = os.environ.get("SSMBENCH_CONV_BWD")
    os.environ["SSMBENCH_CONV_BWD"] = mode
    try:
        return do_bench(step, warmup=25, rep=200, return_mode="median")
    finally:  # the rows' kernel_options say what this process runs otherwise
        if before is None:
            del os.environ["SSMBENCH_CONV_BWD"]
        else:
            os.environ["SSMBENCH_CONV_BWD"] = before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="CSV of the rows")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_conv1d_bwd: needs a CUDA device (the two paths are compared on the GPU)", file=sys.stderr)
        return 2
    from ssmbench.env import environment

    rows = []
    for name, shape in SHAPES.items():
        ms = {mode: time_fwd_bwd(*shape, mode) for mode in ("fused", "two_pass")}
        rows.append({"shape": name, "fused_ms": ms["fused"], "two_pass_ms": ms["two_pass"],
                     "fused_over_two_pass": ms["fused"] / ms["two_pass"], **environment("cuda")})
    print("| shape | fused fwd+bwd ms | two-pass fwd+bwd ms | fused / two-pass |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['fused_ms']:.3f} | {r['two_pass_ms']:.3f} | {r['fused_over_two_pass']:.2f}x |")
    if args.out:
        import pandas as pd
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
