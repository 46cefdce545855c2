"""RMSNorm on the GPU: torch's nn.RMSNorm against the Triton kernel (kernels/rmsnorm), forward and forward +
backward, at the Mamba models' rows: [64 * 4128, 64] fp32 is Table 1's residual stream (batch 64, L 4128,
d_model 64), where torch's norm kernels took ~0.2 ms a call against a ~0.03 ms memory floor; d 128 and 1024 are
extra rows. Medians of triton.testing.do_bench (L2 flushed between calls), one process; the outputs and gradients
of the two are compared first. "auto" stays torch until these numbers say otherwise (kernels/rmsnorm/table.py).

    python scripts/bench_rmsnorm.py [--out results/kernels/rmsnorm.csv] [--dtype float32|bfloat16] [--d 64,128,1024]
                                    [--programs-per-sm N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROWS = 64 * 4128  # Table 1: batch 64, L 4128


def bench_one(rows: int, d: int, dtype: torch.dtype) -> dict:
    from triton.testing import do_bench

    from ssmbench.kernels.rmsnorm import rms_norm

    g = torch.Generator(device="cuda").manual_seed(0)
    norm = torch.nn.RMSNorm(d, eps=1e-5, device="cuda")  # fp32 weight, as make_norm builds it
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(d, device="cuda", generator=g))
    x = torch.randn(rows, d, device="cuda", generator=g, dtype=dtype).requires_grad_()
    dy = torch.randn(rows, d, device="cuda", generator=g, dtype=dtype)
    fns = {"torch": norm, "triton": lambda t: rms_norm(t, norm.weight, norm.eps, backend="triton")}

    # same numbers first: a fast wrong kernel is no result
    def run(f):
        y = f(x)
        return (y, *torch.autograd.grad(y, (x, norm.weight), dy))

    out = {k: run(f) for k, f in fns.items()}
    diff = max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()
               for a, b in zip(out["triton"], out["torch"]))
    del out

    row = {"rows": rows, "d": d, "dtype": str(dtype).removeprefix("torch."), "max_rel_diff": diff}
    for k, f in fns.items():
        # the forward as in training (grad enabled: torch saves its rstd too); backward without accumulating
        row[f"{k}_fwd_ms"] = do_bench(lambda: f(x), warmup=25, rep=200, return_mode="median")
        row[f"{k}_fwdbwd_ms"] = do_bench(lambda: torch.autograd.grad(f(x), (x, norm.weight), dy), warmup=25,
                                         rep=200, return_mode="median")
    # bytes a fused pass must move: forward reads x and writes y; backward reads x and dy and writes dx
    nbytes = rows * d * x.element_size()
    row["triton_fwd_GBps"] = 2 * nbytes / row["triton_fwd_ms"] / 1e6
    row["triton_fwdbwd_GBps"] = 5 * nbytes / row["triton_fwdbwd_ms"] / 1e6
    for p in ("fwd", "fwdbwd"):
        row[f"torch_over_triton_{p}"] = row[f"torch_{p}_ms"] / row[f"triton_{p}_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="CSV of the rows")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="x's dtype (weight: fp32)")
    ap.add_argument("--d", default="64,128,1024", help="widths, comma-separated (rows: 64 * 4128 each)")
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--programs-per-sm", type=int, default=None,
                    help="the Triton backward's grid (kernels/rmsnorm/triton_rmsnorm.py PROGRAMS_PER_SM)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_rmsnorm: needs a CUDA device (it times torch's and the Triton RMSNorm kernels on the GPU); "
              "none is visible here", file=sys.stderr)
        return 2
    from ssmbench.env import environment
    from ssmbench.kernels.rmsnorm import triton_rmsnorm

    if args.programs_per_sm:
        triton_rmsnorm.PROGRAMS_PER_SM = args.programs_per_sm
    meta = {**environment("cuda"), "programs_per_sm": triton_rmsnorm.PROGRAMS_PER_SM}
    rows = [bench_one(args.rows, int(d), getattr(torch, args.dtype)) | meta for d in args.d.split(",")]
    print(f"{meta['device']}, torch {meta['torch']}, commit {meta['commit']}, backward grid "
          f"{meta['programs_per_sm']} programs per SM; medians in ms\n")
    print("| rows x d | dtype | torch fwd | triton fwd | fwd ratio | torch fwd+bwd | triton fwd+bwd | fwd+bwd ratio "
          "| triton GB/s fwd, fwd+bwd | max rel diff |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rows']} x {r['d']} | {r['dtype']} | {r['torch_fwd_ms']:.3f} | {r['triton_fwd_ms']:.3f} "
              f"| {r['torch_over_triton_fwd']:.2f}x | {r['torch_fwdbwd_ms']:.3f} | {r['triton_fwdbwd_ms']:.3f} "
              f"| {r['torch_over_triton_fwdbwd']:.2f}x | {r['triton_fwd_GBps']:.0f}, {r['triton_fwdbwd_GBps']:.0f} "
              f"| {r['max_rel_diff']:.1e} |")
    print("\nratio: torch time / triton time (above 1: Triton is faster)")
    if args.out:
        import pandas as pd
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
