"""One forward + backward of the fused scan, for Nsight Compute to profile (the kernels by name):

    ncu --kernel-name regex:scan_ --launch-skip 2 --launch-count 2 --set full \
        python3 scripts/ncu_scan.py --batch 1 --dim 1024 --length 32768

Runs a warm-up step first (compilation), then the profiled step.
"""

from __future__ import annotations

import argparse

import torch

from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
from ssmbench.kernels.selective_scan.triton_scan import selective_scan_triton


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--length", type=int, default=32768)
    ap.add_argument("--state", type=int, default=16)
    a = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    B, D, L = a.batch, a.dim, a.length
    leaves = paper_scan_inputs(B, D, L, a.state, generator=g)
    leaves = {k: v.requires_grad_() for k, v in leaves.items()}
    dout = torch.randn(B, D, L, device="cuda", generator=g).bfloat16()
    for _ in range(2):  # warm-up (compiles), then the step to profile
        selective_scan_triton(**leaves, delta_softplus=True).backward(dout)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
