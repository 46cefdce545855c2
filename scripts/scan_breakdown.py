"""Where the time of one selective-scan call goes on a GPU, and what backward variants cost.

    python scripts/scan_breakdown.py --out DIR [--sections launch,host,kernels,variants]

  launch    host time of one Triton launch: a 1-argument kernel against one with the scan's 45 arguments
  host      per call: host wall time (calls queued back to back, one sync at the end) against the GPU time
            (do_bench median), for the forward (no grad) and forward+backward; a cProfile of the calls at the
            shortest length (top functions by own time) says which Python costs what
  kernels   torch.profiler: GPU time per kernel inside one forward+backward (the scan's kernels and the small
            torch ops around them)
  fwd_variants  the forward with checkpoints, without, and with the last state alone
  variants  backward launch parameters and kernel forms, timed by do_bench; also the kernel with the dB/dC
            atomics removed (a patched copy, wrong gradients, only to price the atomics) and the number of
            accumulator copies; registers and spills of each compiled backward kernel

Writes DIR/breakdown.md (tables) and DIR/breakdown.json. Times are medians in ms.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import json
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

from ssmbench.env import git_commit
from ssmbench.kernels.selective_scan import triton_scan as ts
from ssmbench.kernels.selective_scan import triton_util as tu
from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
from ssmbench.kernels.selective_scan.triton_scan import selective_scan_triton
from ssmbench.perf.timing import do_bench_median, wall_ms

DEV = "cuda"
OUT: dict = {}
MD: list[str] = []


def log(*a):
    print(*a, flush=True)


def table(title, rows):
    if not rows:
        return
    keys = list(rows[0])
    MD.extend([f"\n## {title}\n", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)])
    for r in rows:
        MD.append("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    OUT[title] = rows
    log("\n".join(MD[-len(rows) - 3:]))


def inputs(batch, dim, L, N=16, dtype=torch.bfloat16):
    return paper_scan_inputs(batch, dim, L, N, dtype, generator=torch.Generator(device=DEV).manual_seed(0))


def leaves(inp):
    return {k: v.detach().requires_grad_() for k, v in inp.items()}


def fwd_fn(inp, cfg=None):
    def f():
        with torch.no_grad():
            selective_scan_triton(**inp, delta_softplus=True, config=cfg)
    return f


def fwdbwd_fn(inp, cfg=None):
    lf = leaves(inp)
    dout = torch.randn_like(inp["u"])

    def f():
        selective_scan_triton(**lf, delta_softplus=True, config=cfg).backward(dout)
    return f, list(lf.values())


def gpu_ms(f, grads=None):
    return do_bench_median(f, grads, warmup_ms=25, rep_ms=100)


def host_ms(f, grads=None, n=200):
    """Wall time per call with the calls queued back to back: the host's cost when it exceeds the GPU's."""
    return wall_ms(f, DEV, warmup=5, repeats=1, calls=n, grad_to_none=grads)[0]


# ------------------------------------------------------------------------------------------------ launch

@triton.jit
def _one_arg(x_ptr):
    pid = tl.program_id(0)
    tl.store(x_ptr + pid, pid.to(tl.float32))


@triton.jit
def _many_args(x_ptr, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20,
               a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11,
               p12, F1: tl.constexpr, F2: tl.constexpr, F3: tl.constexpr, F4: tl.constexpr, F5: tl.constexpr):
    pid = tl.program_id(0)
    tl.store(x_ptr + pid, (pid + a1 + a30).to(tl.float32))


def launch():
    x = torch.zeros(1024, device=DEV)
    ptrs = [torch.zeros(16, device=DEV) for _ in range(12)]
    ints = list(range(3, 33))
    rows = []
    cases = {"1 arg": lambda: _one_arg[(1,)](x),
             "42 args + 5 constexpr": lambda: _many_args[(1,)](x, *ints, *ptrs, F1=1, F2=True, F3=16, F4=64,
                                                              F5=False),
             "torch.empty x4": lambda: [torch.empty(1024, device=DEV) for _ in range(4)],
             "torch.zeros": lambda: torch.zeros(16, 1, 16, 512, device=DEV),
             "tensor.sum(0) [16,1024,16]": lambda: ptrs[0].new_empty(16, 1024, 16).sum(0)}
    for name, f in cases.items():
        rows.append(dict(case=name, host_us=host_ms(f, n=2000) * 1e3))
    table("launch: host time per call", rows)


# ------------------------------------------------------------------------------------------------ host

def host():
    rows = []
    for (b, d, L) in [(1, 1024, 512), (1, 1024, 2048), (1, 1024, 32768), (8, 1536, 4096)]:
        inp = inputs(b, d, L)
        f = fwd_fn(inp)
        fb, grads = fwdbwd_fn(inp)
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        rows.append(dict(B=b, D=d, L=L, fwd_gpu=gpu_ms(f), fwd_host=host_ms(f),
                         fwd_kernel_ckpt=gpu_ms(lambda: ts._fwd(*args, True, ts.DEFAULT_CONFIG, None, True)),
                         fwd_kernel_no_ckpt=gpu_ms(lambda: ts._fwd(*args, True, ts.DEFAULT_CONFIG, None, False)),
                         fwdbwd_gpu=gpu_ms(fb, grads), fwdbwd_host=host_ms(fb, grads)))
        del inp, f, fb, grads
        torch.cuda.empty_cache()
    table("host: host wall per call vs GPU time (ms)", rows)
    inp = inputs(1, 1024, 512)
    fb, grads = fwdbwd_fn(inp)
    host_ms(fb, grads, n=20)
    pr = cProfile.Profile()
    pr.enable()
    host_ms(fb, grads, n=200)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
    text = s.getvalue()
    OUT["cprofile_fwdbwd_L512"] = text
    MD.extend(["\n## cProfile: 200 forward+backward calls, paper config L = 512 (top 30 by own time)\n",
               "```", text.strip(), "```"])
    log(text)


# ------------------------------------------------------------------------------------------------ kernels

def kernels():
    from torch.profiler import ProfilerActivity, profile
    for (b, d, L) in [(1, 1024, 512), (1, 1024, 32768), (8, 1536, 4096)]:
        inp = inputs(b, d, L)
        fb, grads = fwdbwd_fn(inp)
        for _ in range(3):
            fb()
        torch.cuda.synchronize()
        n = 10
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                for g in grads:
                    g.grad = None
                fb()
            torch.cuda.synchronize()
        rows = []
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if t > 0:
                rows.append(dict(kernel=e.key[:70], calls_per_step=e.count / n, us_per_step=t / n))
        rows.sort(key=lambda r: -r["us_per_step"])
        rows.append(dict(kernel="total", calls_per_step=sum(r["calls_per_step"] for r in rows),
                         us_per_step=sum(r["us_per_step"] for r in rows)))
        table(f"kernels: GPU time per forward+backward, B{b} D{d} L{L}", rows)
        del inp, fb, grads
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ variants

def _kernels_without_atomics():
    """A copy of the kernel file with the dB/dC atomics replaced by `pass` (to price them; wrong gradients),
    loaded as a module."""
    src, n = re.subn(r"^(\s*)tl\.atomic_add\(.*$", r"\1pass", ts._KERNELS.read_text(), flags=re.M)
    assert n == 2, n
    path = Path(tempfile.mkdtemp()) / "scan_kernels_variant.py"
    path.write_text(src)
    return tu.load_kernels(path)


def _bwd_regs(K):
    out = []
    try:
        for cache in K.scan_bwd_kernel.device_caches.values():
            for k in cache[0].values():
                out.append(f"{k.n_regs}r/{k.n_spills}s")
    except Exception as e:  # the cache layout differs between triton releases
        out.append(f"? ({type(e).__name__})")
    return ",".join(out)


def _bwd_layouts(K):
    """The blocked layouts of the compiled backward kernel and the layout its atomics use (from the TTGIR)."""
    try:
        for cache in K.scan_bwd_kernel.device_caches.values():
            for k in cache[0].values():
                ttg = k.asm["ttgir"]
                lines = [ln.strip() for ln in ttg.splitlines() if ln.startswith("#blocked")]
                lines += [re.sub(r"loc\(.*", "", ln.strip())[:200] for ln in ttg.splitlines() if "atomic_rmw" in ln]
                return lines
    except Exception as e:
        return [f"? ({type(e).__name__}: {e})"]
    return []


def _fwdbwd_row(name, cfg, shapes):
    r = dict(variant=name)
    for (b, d, L) in shapes:
        inp = inputs(b, d, L)
        fb, grads = fwdbwd_fn(inp, cfg)
        r[f"B{b}D{d}L{L}"] = gpu_ms(fb, grads)
        del inp, fb, grads
    r["regs/spills"] = _bwd_regs(ts._k())
    return r


def variants():
    shapes = [(1, 1024, 512), (1, 1024, 4096), (1, 1024, 32768), (8, 1536, 4096)]
    base = ts.DEFAULT_CONFIG
    cfgs = {
        "default": base,
        "chunk 32": dataclasses.replace(base, chunk=32),
        "chunk 128, 2 warps": dataclasses.replace(base, chunk=128, warps_bwd=2),
    }
    rows = []
    orig_k = ts._k
    try:
        for name, cfg in cfgs.items():
            rows.append(_fwdbwd_row(name, cfg, shapes))
            if cfg is base:
                MD.extend(["\n## backward kernel layouts (TTGIR), default config\n", "```", *_bwd_layouts(ts._k()),
                           "```"])
                log("\n".join(MD[-6:]))
            if hasattr(ts._k().scan_bwd_kernel, "device_caches"):  # so the next row lists its own kernels
                ts._k().scan_bwd_kernel.device_caches.clear()
        kmod = _kernels_without_atomics()
        ts._k = lambda: kmod
        rows.append(_fwdbwd_row("no dB/dC atomics (wrong grads)", base, shapes))
    finally:
        ts._k = orig_k
    table("variants: forward+backward ms", rows)


def fwd_variants():
    """The forward kernel with and without checkpoint stores, and with the final state alone (what a no-grad
    call with return_last_state runs), over grids from 8 to ~1000 programs per SM."""
    rows = []
    for (b, d, L) in [(1, 1024, 32768), (4, 1024, 8192), (8, 1536, 4096), (64, 2048, 2048)]:
        inp = inputs(b, d, L)
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        cfg = ts.DEFAULT_CONFIG
        rows.append(dict(B=b, D=d, L=L, programs_per_sm=b * d / tu.num_sms(torch.device(DEV)),
                         checkpoints=gpu_ms(lambda a=args: ts._fwd(*a, True, cfg, None, True)),
                         none=gpu_ms(lambda a=args: ts._fwd(*a, True, cfg, None, False)),
                         last_state_only=gpu_ms(lambda a=args: ts._fwd(*a, True, cfg, None, False, True))))
        del inp, args
        torch.cuda.empty_cache()
    table("fwd_variants: forward kernel ms by what it stores", rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", default="launch,host,kernels,variants")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = torch.cuda.get_device_properties(0)
    MD.append(f"# Scan time breakdown\n\n{p.name} | torch {torch.__version__} | triton {triton.__version__} | "
              f"commit {git_commit()} | {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    t0 = time.time()
    try:
        for s in args.sections.split(","):
            log(f"== {s} ({time.time() - t0:.0f}s)")
            try:
                globals()[s]()
            except Exception as e:  # keep the other sections
                import traceback
                traceback.print_exc()
                MD.append(f"\n## {s}: failed: {type(e).__name__}: {e}\n")
    finally:
        (out / "breakdown.md").write_text("\n".join(MD) + "\n")
        (out / "breakdown.json").write_text(json.dumps(OUT, indent=1, default=str))
        log(f"wrote {out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
