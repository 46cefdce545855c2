"""Time the Triton kernels against their peers in one process and write CSV + markdown + env.

    python scripts/bench_kernels.py --out DIR [--tune] [--sections paper,b8,narrow,memory,conv,decode]

Sections (times are triton.testing.do_bench medians, ms):
  copy     device-to-device copy bandwidth (bytes read + written), the ceiling for the bandwidth columns
  tune     (--tune) forward / backward block-size sweeps of the scan at two shapes
  paper    batch 1, dim 1024, N 16, bf16, gated z, delta_softplus, B/C [1, 1, N, L], L = 2^9 .. 2^19: triton
           fwd and fwd+bwd, the "torch" backend (when kernels/selective_scan/torch_scan.py exists), causal SDPA
           FlashAttention-2 (head dim 64, 16 heads, bf16)
  b8       batch 8, dim 1536, L 4096, same settings
  regs     register caps (maxnreg) of the forward and backward kernels, chunk 64 and 32 (not in the default list;
           regs_bwd: the backward alone)
  split    the long-sequence split forced on grids that fill the GPU only once (not in the default list)
  narrow   batch 1, dim 128, N 16, L 2^20 with the long-sequence path forced on and off
  memory   peak memory of fwd+bwd at L = 2^16 (paper config) against the bytes of inputs + outputs + grads
  conv     causal conv1d (W 4, silu) triton vs the F.conv1d reference;  decode: one selective_state_update step
Official mamba_ssm CUDA times (ssmbench/reference/h200_official_kernels.csv, measured 2026-11-28 on an H200)
are joined as targets where the shape matches; they were measured in another process, so the ratio to them is
indicative, while the ratios between columns of one row are same-run comparisons.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from ssmbench.env import git_commit
from ssmbench.kernels.selective_scan import triton_scan as ts
from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
from ssmbench.kernels.selective_scan.triton_scan import ScanConfig, selective_scan_triton
from ssmbench.perf.timing import clear_grads, cuda_peak, do_bench_median

DEV = "cuda"
ROWS: list[dict] = []


def official_times() -> dict:
    """(B, D, L, gated_z) -> (fwd_ms, fwdbwd_ms) of the official mamba_ssm scan, from the CSV shipped in
    ssmbench.reference (measured on an H200 in another process; see H200_OFFICIAL_CSV there)."""
    from importlib.resources import files

    from ssmbench import reference

    with files(reference).joinpath(reference.H200_OFFICIAL_CSV).open() as f:
        rows = list(csv.DictReader(f))
    def ms(v: str) -> float:
        return float(v) if v else math.nan  # a forward-only row (inference shapes) has no fwdbwd time

    return {(int(r["B"]), int(r["D"]), int(r["L"]), r["gated_z"] == "True"): (ms(r["fwd_ms"]), ms(r["fwdbwd_ms"]))
            for r in rows if r["op"] == "mamba_ssm_selective_scan"}


OFFICIAL = official_times()


def log(*a):
    print(*a, flush=True)


def bench(fn, grad_to_none=None, rep=100):
    return do_bench_median(fn, grad_to_none, warmup_ms=25, rep_ms=rep)


def row(**kw):
    ROWS.append(kw)
    log("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items()))


def env_info():
    p = torch.cuda.get_device_properties(0)
    return dict(gpu=torch.cuda.get_device_name(0), sms=p.multi_processor_count, torch=torch.__version__,
                triton=triton.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                date=time.strftime("%Y-%m-%d %H:%M:%S"), commit=git_commit())


def copy_bandwidth():
    x = torch.empty(2 * 1024**3 // 4, dtype=torch.float32, device=DEV).normal_()
    y = torch.empty_like(x)
    ms = bench(lambda src=x, dst=y: dst.copy_(src))
    bw = 2 * x.numel() * 4 / ms / 1e9  # TB/s
    row(section="copy", op="copy", bytes=2 * x.numel() * 4, ms=ms, tbps=bw)
    del x, y
    return bw


def scan_inputs(batch, dim, L, N=16, dtype=torch.bfloat16, z=True, seed=0):
    return paper_scan_inputs(batch, dim, L, N, dtype, z, generator=torch.Generator(device=DEV).manual_seed(seed))


def io_bytes(inp, with_grads):
    """Fewest bytes a fused scan must move: inputs read once, y written once (+ dout read, grads written)."""
    n = sum(t.numel() * t.element_size() for t in inp.values() if t is not None)
    y = inp["u"].numel() * inp["u"].element_size()
    return n + y if not with_grads else 2 * n + 2 * y  # fwd+bwd: fwd (in + y) + bwd (in + dout + grads)


def time_scan(fn, inp, backward):
    if not backward:
        with torch.no_grad():
            return bench(lambda: fn(**inp))
    leaf = {k: (v.detach().requires_grad_() if v is not None else None) for k, v in inp.items()}
    dout = torch.randn_like(inp["u"])
    grads = [v for v in leaf.values() if v is not None]

    def step():
        fn(**leaf).backward(dout)
    return bench(step, grad_to_none=grads)


def triton_fn(long_sequence=None, config=None):
    def f(**kw):
        return selective_scan_triton(**kw, delta_softplus=True, long_sequence=long_sequence, config=config)
    return f


def torch_backend():
    try:
        from ssmbench.kernels.selective_scan.torch_scan import selective_scan_torch
    except Exception as e:  # not written yet, or broken: skip the column
        log(f"  torch backend unavailable: {type(e).__name__}: {e}")
        return None

    def f(**kw):
        return selective_scan_torch(**kw, delta_softplus=True)
    return f


def flash_fn(L, dim=1024, backward=False):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    h = dim // 64
    q, k, v = (torch.randn(1, h, L, 64, device=DEV, dtype=torch.bfloat16, requires_grad=backward)
               for _ in range(3))
    if not backward:
        def f():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return bench(f)
    do = torch.randn(1, h, L, 64, device=DEV, dtype=torch.bfloat16)

    def fb():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(do)
    return bench(fb, grad_to_none=[q, k, v])


def scan_rows(section, batch, dim, L, copy_bw, torch_f=None, flash=False, extra=None):
    inp = scan_inputs(batch, dim, L)
    off = OFFICIAL.get((batch, dim, L, True), (math.nan, math.nan))
    res = {}
    for bwd in (False, True):
        ms = time_scan(triton_fn(), inp, bwd)
        launch = dict(ts.LAST_LAUNCH)
        tb = io_bytes(inp, bwd) / ms / 1e9
        res[bwd] = ms
        r = dict(section=section, op="triton_scan", pass_="fwdbwd" if bwd else "fwd", B=batch, D=dim, L=L, N=16,
                 ms=ms, official_ms=off[bwd], vs_official=off[bwd] / ms, tbps=tb, bw_frac=tb / copy_bw,
                 segments=launch.get("bwd_segments" if bwd else "fwd_segments"))
        if bwd:
            r.update(bwd_reverse=launch.get("bwd_reverse"))
        if torch_f is not None:
            try:
                tms = time_scan(torch_f, inp, bwd)
                r.update(torch_ms=tms, speedup_vs_torch=tms / ms)
            except torch.cuda.OutOfMemoryError:
                r.update(torch_ms="oom")
                torch.cuda.empty_cache()
        if flash:
            fms = flash_fn(L, dim, bwd)
            r.update(flash_ms=fms, speedup_vs_flash=fms / ms)
        if extra:
            r.update(extra)
        row(**r)
    return res


def time_bwd(args, dout, cfg, long_sequence=False):
    """Median ms of the backward alone (its forward's checkpoints made outside the timing), or None with the
    reason logged when the config cannot run (out of resources etc.)."""
    try:
        _, ckpt, _ = ts._fwd(*args, True, cfg, long_sequence, True)
        return bench(lambda: ts._bwd(dout, None, *args, ckpt, True, cfg, long_sequence))
    except Exception as e:
        log(f"  bwd {cfg}: {type(e).__name__} {str(e)[:100]}")
        return None


def tune(copy_bw):
    log("== tune: forward and backward launch parameters (ms)")
    shapes = [(1, 1024, 32768), (8, 1536, 4096)]
    bwd_cfgs = [ScanConfig(chunk=ch, warps_bwd=w, block_l_fwd=ch, warps_fwd=1) for ch in (32, 64, 128)
                for w in (1, 2, 4) if ch * 16 // (32 * w) >= 4]
    best = {}
    inputs = {}
    for (B, D, L) in shapes:
        inp = inputs[(B, D, L)] = scan_inputs(B, D, L)
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        dout = torch.randn_like(inp["u"])
        for cfg in bwd_cfgs:
            ms = time_bwd(args, dout, cfg)
            if ms is None:
                continue
            row(section="tune_bwd", B=B, D=D, L=L, chunk=cfg.chunk, warps=cfg.warps_bwd, ms=ms)
            best.setdefault(("bwd", B, D, L), []).append((ms, cfg))

    def pick(kind, key):  # the config with the smallest sum over shapes of time / best time at that shape
        score = {}
        for (kd, *shape), v in best.items():
            if kd == kind:
                t0 = min(ms for ms, _ in v)
                for ms, c in v:
                    score[key(c)] = score.get(key(c), 0.0) + ms / t0
        return min(score, key=score.get)
    ch, wb = pick("bwd", lambda c: (c.chunk, c.warps_bwd))
    fwd_cfgs = [ScanConfig(block_l_fwd=bl, warps_fwd=w, chunk=ch) for bl in (64, 128, 256) for w in (1, 2)
                if bl % ch == 0 or ch % bl == 0]
    for (B, D, L), inp in inputs.items():
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        for cfg in fwd_cfgs:
            try:
                ms = bench(lambda: ts._fwd(*args, True, cfg, False, True))
            except Exception as e:  # out of resources etc.
                log(f"  fwd {cfg}: {type(e).__name__} {str(e)[:100]}")
                continue
            row(section="tune_fwd", B=B, D=D, L=L, block_l=cfg.block_l_fwd, warps=cfg.warps_fwd, chunk=ch, ms=ms)
            best.setdefault(("fwd", B, D, L), []).append((ms, cfg))
    del inputs
    for k, v in best.items():
        v.sort(key=lambda x: x[0])
        log(f"  best {k}: " + "; ".join(f"{ms:.4f} bl={c.block_l_fwd} ch={c.chunk} wf={c.warps_fwd} wb={c.warps_bwd}"
                                       for ms, c in v[:4]))
    bl, wf = pick("fwd", lambda c: (c.block_l_fwd, c.warps_fwd))
    ts.DEFAULT_CONFIG = dataclasses.replace(ts.DEFAULT_CONFIG, block_l_fwd=bl, warps_fwd=wf, chunk=ch, warps_bwd=wb)
    log(f"  adopted {ts.DEFAULT_CONFIG}")
    # the long-sequence split: how many warps per SM to aim for
    inp = scan_inputs(1, 128, 2**20)
    args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    dout = torch.randn_like(inp["u"])
    for tw in (32, 64, 128):
        cfg = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=tw)
        ms = bench(lambda: ts._fwd(*args, True, cfg, True, True))
        segs = ts.LAST_LAUNCH["fwd_segments"]
        msb = time_bwd(args, dout, cfg, long_sequence=True)
        if msb is None:
            continue
        row(section="tune_long", B=1, D=128, L=2**20, target_warps_per_sm=tw, fwd_segments=segs, fwd_ms=ms,
            bwd_segments=ts.LAST_LAUNCH["bwd_segments"], bwd_ms=msb)
        best.setdefault("long", []).append((ms + msb, tw))
    tw = min(best["long"])[1]
    ts.DEFAULT_CONFIG = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=tw)
    log(f"  adopted {ts.DEFAULT_CONFIG} (used by every section below)")


def regs(forward=True):
    """Register caps (ScanConfig.maxnreg_fwd / maxnreg_bwd) against occupancy: at 255 registers a one-warp
    program leaves 8 warps per SM. Forward and backward timed separately at the paper config and batch 8
    (section regs_bwd: the backward alone)."""
    log("== regs: register caps of the forward and backward kernels (ms)")
    # At L = 2048 the paper config's 1024 one-warp programs are all resident at once, each walking 16 blocks:
    # latency-bound. There the long-sequence split (more, shorter programs) is timed with each cap too.
    for (B, D, L) in [(1, 1024, 2048), (1, 1024, 32768), (8, 1536, 4096)]:
        inp = scan_inputs(B, D, L)
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        dout = torch.randn_like(inp["u"])
        for cap in (None, 168, 128) if forward else ():
            for tw, bl in ([(None, 128), (None, 64), (16, 128), (32, 128), (64, 128), (32, 64)] if L <= 2048
                           else [(None, 128)]):  # tw: forced split, warps per SM aimed at; bl: forward block
                cfg = dataclasses.replace(ts.DEFAULT_CONFIG, maxnreg_fwd=cap, target_warps_per_sm=tw or 128,
                                          block_l_fwd=bl)
                for store in (True, False):
                    try:
                        ms = bench(lambda a=args: ts._fwd(*a, True, cfg, tw is not None, store, not store))
                    except Exception as e:  # out of resources etc.
                        log(f"  fwd cap {cap}: {type(e).__name__} {str(e)[:100]}")
                        continue
                    row(section="regs", pass_="fwd", B=B, D=D, L=L, block_l=bl, chunk=cfg.chunk, maxnreg=cap or 255,
                        stores="checkpoints" if store else "last state",
                        segments=ts.LAST_LAUNCH["fwd_segments"], ms=ms)
        for chunk in (64, 32):
            for cap in (None, 200, 168, 128):
                ms = time_bwd(args, dout, dataclasses.replace(ts.DEFAULT_CONFIG, chunk=chunk, maxnreg_bwd=cap))
                if ms is None:
                    continue
                row(section="regs", pass_="bwd", B=B, D=D, L=L, chunk=chunk, maxnreg=cap or 255,
                    reverse=ts.LAST_LAUNCH.get("bwd_reverse"), ms=ms)
        del inp, args, dout
        torch.cuda.empty_cache()


def split():
    """The long-sequence split (more, shorter programs, plus a pass for the carries) forced where the heuristic
    does not take it: at batch 1, dim 1024 the 1024 one-warp programs leave ~8 warps per SM, too few to hide the
    backward's atomics and the scans' latencies. target_warps_per_sm sets how many segments."""
    log("== split: forced long-sequence split at grids of one wave (ms)")
    for (B, D, L) in [(1, 1024, 8192), (1, 1024, 32768), (1, 1024, 131072), (8, 1536, 4096)]:
        inp = scan_inputs(B, D, L)
        args = [inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        dout = torch.randn_like(inp["u"])
        for tw in (None, 16, 24, 32, 64):
            cfg = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=tw or 128)
            forced = tw is not None
            ms = bench(lambda a=args: ts._fwd(*a, True, cfg, forced, True))
            row(section="split", pass_="fwd", B=B, D=D, L=L, target_warps_per_sm=tw or 0,
                segments=ts.LAST_LAUNCH["fwd_segments"], ms=ms)
            msb = time_bwd(args, dout, cfg, long_sequence=forced)
            if msb is not None:
                row(section="split", pass_="bwd", B=B, D=D, L=L, target_warps_per_sm=tw or 0,
                    segments=ts.LAST_LAUNCH["bwd_segments"], ms=msb)
        del inp, args, dout
        torch.cuda.empty_cache()


def narrow(copy_bw):
    log("== narrow-long: batch 1, dim 128, N 16, L 2^20")
    inp = scan_inputs(1, 128, 2**20)
    for bwd in (False, True):
        t = {}
        for ls in (True, False):
            t[ls] = time_scan(triton_fn(long_sequence=ls), inp, bwd)
            seg = ts.LAST_LAUNCH.get("bwd_segments" if bwd else "fwd_segments")
            row(section="narrow", op="triton_scan", pass_="fwdbwd" if bwd else "fwd", B=1, D=128, L=2**20, N=16,
                long_sequence=ls, segments=seg, ms=t[ls], tbps=io_bytes(inp, bwd) / t[ls] / 1e9)
        t_auto = time_scan(triton_fn(), inp, bwd)
        row(section="narrow", op="triton_scan", pass_="fwdbwd" if bwd else "fwd", B=1, D=128, L=2**20, N=16,
            long_sequence="auto", segments=ts.LAST_LAUNCH.get("bwd_segments" if bwd else "fwd_segments"),
            ms=t_auto, speedup_long_vs_plain=t[False] / t[True])


def memory():
    log("== peak memory of fwd+bwd, paper config L = 2^16")
    torch.cuda.empty_cache()
    inp = scan_inputs(1, 1024, 2**16)
    leaf = {k: (v.detach().requires_grad_() if v is not None else None) for k, v in inp.items()}
    dout = torch.randn_like(inp["u"])
    f = triton_fn()
    f(**leaf).backward(dout)  # compile outside the measurement
    clear_grads(v for v in leaf.values() if v is not None)
    out = {}

    def fwdbwd():
        out["y"] = f(**leaf)
        out["y"].backward(dout)
    peak, base = cuda_peak(fwdbwd, DEV)
    y = out["y"]
    ins = sum(v.numel() * v.element_size() for v in leaf.values() if v is not None)
    outs = y.numel() * y.element_size() + dout.numel() * dout.element_size()
    grads = sum(v.grad.numel() * v.grad.element_size() for v in leaf.values() if v is not None)
    # base already holds inputs + dout; peak counts everything alive at the high-water mark
    need = ins + outs + grads
    row(section="memory", op="triton_scan", B=1, D=1024, L=2**16, N=16, peak_bytes=peak, inputs=ins,
        outputs_incl_dout=outs, grads=grads, io_total=need, ratio=peak / need, base=base)


def conv_and_decode(copy_bw):
    from ssmbench.kernels.causal_conv1d import causal_conv1d_fn
    from ssmbench.kernels.selective_scan import selective_state_update
    log("== causal conv1d (W 4, silu, bf16) and decode step")
    for (B, D, L) in [(1, 2048, 32768), (8, 3072, 4096)]:
        x = torch.randn(B, D, L, device=DEV, dtype=torch.bfloat16)
        w = torch.randn(D, 4, device=DEV)
        b = torch.randn(D, device=DEV)
        for backend in ("triton", "reference"):
            ms = bench(lambda: causal_conv1d_fn(x, w, b, "silu", backend=backend))
            xs = x.detach().requires_grad_()
            ws, bs = w.detach().requires_grad_(), b.detach().requires_grad_()
            dy = torch.randn_like(x)
            msb = bench(lambda: causal_conv1d_fn(xs, ws.to(x.dtype) if backend == "reference" else ws,
                                                 bs.to(x.dtype) if backend == "reference" else bs, "silu",
                                                 backend=backend).backward(dy), grad_to_none=[xs, ws, bs])
            row(section="conv", op=f"conv1d_{backend}", B=B, D=D, L=L, ms=ms, fwdbwd_ms=msb,
                tbps=2 * x.numel() * 2 / ms / 1e9)
    for (B, D) in [(1, 2048), (64, 2048), (128, 3072)]:
        N = 16
        state = torch.randn(B, D, N, device=DEV)
        x, dt, z = (torch.randn(B, D, device=DEV, dtype=torch.bfloat16) for _ in range(3))
        A = -torch.rand(D, N, device=DEV)
        Bm, Cm = (torch.randn(B, N, device=DEV, dtype=torch.bfloat16) for _ in range(2))
        Dv, bias = torch.randn(D, device=DEV), torch.randn(D, device=DEV)
        for backend in ("triton", "reference"):
            ms = bench(lambda: selective_state_update(state, x, dt, A, Bm, Cm, Dv, z, bias, True, backend=backend))
            row(section="decode", op=f"state_update_{backend}", B=B, D=D, N=N, ms=ms)


def write(out: Path, env):
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.json").write_text(json.dumps(env, indent=2))
    keys = []
    for r in ROWS:
        keys += [k for k in r if k not in keys]
    with open(out / "kernels_bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(ROWS)
    lines = ["# Kernel benchmark\n", f"{env['gpu']} | torch {env['torch']} | triton {env['triton']} | "
             f"CUDA {env['cuda']} | {env['date']}\n", "Median ms (triton.testing.do_bench). `official_ms`: "
             "mamba_ssm CUDA kernel, same GPU model, other process (../shared/reference).\n"]
    sections = []
    for r in ROWS:
        if r["section"] not in sections:
            sections.append(r["section"])
    for s in sections:
        rs = [r for r in ROWS if r["section"] == s]
        ks = []
        for r in rs:
            ks += [k for k in r if k not in ks and k != "section"]
        lines.append(f"\n## {s}\n")
        lines.append("| " + " | ".join(ks) + " |")
        lines.append("|" + "---|" * len(ks))
        for r in rs:
            cells = []
            for k in ks:
                v = r.get(k, "")
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
            lines.append("| " + " | ".join(cells) + " |")
    (out / "kernels_bench.md").write_text("\n".join(lines) + "\n")


def _on_term(*_):
    raise KeyboardInterrupt("SIGTERM")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "results/kernels"))
    ap.add_argument("--tune", action="store_true")
    ap.add_argument("--sections", default="paper,b8,narrow,memory,conv")
    ap.add_argument("--max-log2-len", type=int, default=19)
    ap.add_argument("--torch-max-log2-len", type=int, default=16)
    ap.add_argument("--flash-max-log2-len", type=int, default=16)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_term)  # `timeout` sends SIGTERM: still write what was measured
    out = Path(args.out)
    env = env_info()
    log(json.dumps(env))
    sections = args.sections.split(",")
    t0 = time.time()
    copy_bw = copy_bandwidth()
    log(f"copy bandwidth {copy_bw:.3f} TB/s")
    try:
        if args.tune:
            tune(copy_bw)
        if "paper" in sections:
            log("== paper config: batch 1, dim 1024, N 16, bf16, gated")
            tf = torch_backend()
            for lg in range(9, args.max_log2_len + 1):
                L = 2**lg
                scan_rows("paper", 1, 1024, L, copy_bw, torch_f=tf if lg <= args.torch_max_log2_len else None,
                          flash=lg <= args.flash_max_log2_len)
                torch.cuda.empty_cache()
        if "b8" in sections:
            log("== batch 8, dim 1536, L 4096")
            scan_rows("b8", 8, 1536, 4096, copy_bw, torch_f=torch_backend())
        if "regs" in sections or "regs_bwd" in sections:
            regs(forward="regs" in sections)
        if "split" in sections:
            split()
        if "narrow" in sections:
            narrow(copy_bw)
        if "memory" in sections:
            memory()
        if "conv" in sections:
            conv_and_decode(copy_bw)
    finally:
        env["bench_seconds"] = round(time.time() - t0, 1)
        env["default_config"] = dataclasses.asdict(ts.DEFAULT_CONFIG)
        write(out, env)
        log(f"wrote {out} in {env['bench_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
