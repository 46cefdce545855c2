"""Compile a Triton kernel of the scan for Hopper (sm_90a) on a machine without a GPU, and print what decides its
speed: the blocked layouts (TTGIR), layout conversions and scans, the form and count of its atomics (PTX),
ptxas's registers and spills, and the static SASS instruction mix (cuobjdump; shuffles show conversions and
scans, see results/kernels/ncu/summary.md).

    python scripts/triton_aot_check.py [--kernel scan_bwd_kernel] [--warps 1] [--set BLOCK_L=64 FLIP_XOR=15 ...]

Run it with the triton release of the GPU image (triton 3.6 on the lent H200: `pip install triton==3.6.0` into a
scratch venv; torch is not needed): with the same release and the specialisation a real launch gets (pointers
and every size and stride divisible by 16, strides equal to 1 folded to constants), it reproduces the GPU
compile. Checked 2026-11-29: the backward of the paper config (then chunk 64) gave the GPU's layouts, 255
registers and 22 spilled words, and the same 3792 SASS instructions that Nsight Compute counted on the H200.
The defaults below are ScanConfig's (chunk 32: the backward in 167 registers, no spills).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {
    "scan_bwd_kernel": ROOT / "kernels/selective_scan/triton_scan_kernels.py",
    "scan_fwd_kernel": ROOT / "kernels/selective_scan/triton_scan_kernels.py",
    "conv_fwd_kernel": ROOT / "kernels/causal_conv1d/triton_conv1d_kernels.py",
    "conv_bwd_kernel": ROOT / "kernels/causal_conv1d/triton_conv1d_kernels.py",
}
# The paper configuration's launch: gated z, bias, softplus, time-varying B and C, N = 16, and the launch
# parameters of ScanConfig's defaults. Strides equal to 1 are constants in a real launch.
DEFAULTS = {
    "scan_bwd_kernel": dict(LOCAL=False, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, B_VAR=True,
                            C_VAR=True, HAS_CARRY=False, BLOCK_N=16, BLOCK_L=32, FLIP_XOR=7, s_An=1),
    "scan_fwd_kernel": dict(LOCAL=False, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, B_VAR=True,
                            C_VAR=True, HAS_INIT=False, STORE_CKPT=True, STORE_LAST=False, BLOCK_N=16,
                            BLOCK_L=128, CHUNK=32, s_An=1),
}
HALF = {"u_ptr", "delta_ptr", "z_ptr", "dout_ptr", "du_ptr", "ddelta_ptr", "dz_ptr", "B_ptr", "C_ptr", "out_ptr",
        "x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}  # bf16 activations; everything else fp32
NOT_DIV16 = {"s_part"}  # sizes/strides that are not multiples of 16 in the paper config


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"aot_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default="scan_bwd_kernel", choices=sorted(KERNELS))
    ap.add_argument("--warps", type=int, default=1)
    ap.add_argument("--maxnreg", type=int, default=None, help="cap on registers per thread (ptxas -maxrregcount)")
    ap.add_argument("--set", nargs="*", default=[], help="NAME=VALUE constexprs (Python literals)")
    ap.add_argument("--dump", default=None, help="directory for the ttgir / ptx")
    ap.add_argument("--file", default=None, help="another copy of the kernel file (to try a variant)")
    args = ap.parse_args()
    fn = load(Path(args.file) if args.file else KERNELS[args.kernel], args.kernel)
    names = list(inspect.signature(fn.fn).parameters)
    const = {k: v for k, v in DEFAULTS.get(args.kernel, {}).items() if k in names}  # older copies lack some
    for kv in args.set:
        k, v = kv.split("=", 1)
        const[k] = ast.literal_eval(v)
    sig, attrs = {}, {}
    for i, n in enumerate(names):
        if n in const:
            sig[n] = "constexpr"
            continue
        sig[n] = ("*bf16" if n in HALF else "*fp32") if n.endswith("_ptr") else "i32"
        if n.endswith("_ptr") or n not in NOT_DIV16:
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = triton.compiler.ASTSource(fn=fn, signature=sig, attrs=attrs,
                                    constexprs={(names.index(k),): v for k, v in const.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=args.warps, maxnreg=args.maxnreg))
    ttgir, ptx = ck.asm["ttgir"], ck.asm["ptx"]
    print(f"triton {triton.__version__}, {args.kernel}, {args.warps} warp(s), maxnreg {args.maxnreg}, {const}")
    for line in ttgir.splitlines():
        if line.startswith("#blocked"):
            print(line.split(" = ", 1)[1][:120])
    atomics = re.findall(r"\b(?:red|atom)\.[\w.]+", ptx)
    print("atomics:", {a: atomics.count(a) for a in sorted(set(atomics))})
    # Layout conversions (with one warp they lower to shuffles) and duplicated scans (the compiler recomputes a
    # scan in a second layout rather than convert its result) are what the SHFL count of the SASS below shows.
    print("ttgir: convert_layout", ttgir.count("ttg.convert_layout"), "| scans", ttgir.count('"tt.scan"'),
          "| reductions", ttgir.count('"tt.reduce"'))
    out = Path(args.dump) if args.dump else Path("/tmp")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.kernel}.ttgir").write_text(ttgir)
    (out / f"{args.kernel}.ptx").write_text(ptx)
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")
    for ptxas in ("ptxas", "ptxas-blackwell"):  # newer releases emit PTX that only their second ptxas reads
        ptxas = os.path.join(bindir, ptxas)
        r = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(out / f"{args.kernel}.ptx"), "-o",
                            str(out / f"{args.kernel}.cubin")], capture_output=True, text=True)
        if r.returncode == 0 or not os.path.exists(os.path.join(bindir, "ptxas-blackwell")):
            break
    for line in r.stderr.splitlines():
        if "registers" in line or "spill" in line or "rror" in line:
            print(line.strip())
    cuobjdump = os.path.join(bindir, "cuobjdump")
    if r.returncode == 0 and os.path.exists(cuobjdump):  # static SASS instruction mix (the loop body dominates)
        sass = subprocess.run([cuobjdump, "-sass", str(out / f"{args.kernel}.cubin")], capture_output=True,
                              text=True).stdout
        (out / f"{args.kernel}.sass").write_text(sass)
        ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", sass)
        top = sorted({o: ops.count(o) for o in set(ops)}.items(), key=lambda kv: -kv[1])[:10]
        print(f"sass: {len(ops)} instructions;", ", ".join(f"{o} {n}" for o, n in top))
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
