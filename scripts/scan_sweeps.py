"""Launch-parameter sweeps of the fused Triton scan: kernel development, not benchmarks of record. The kernels'
speed targets (paper config, batch 8, narrow-long, the Table 1 and induction training scans, each beside the
official mamba_ssm kernel's time, peak memory) are the profiler's: `ssmbench-profile profile=targets`.

    python scripts/scan_sweeps.py [--sections tune,regs,regs_bwd,split] [--results-root results] [--study NAME]

Sections (default: tune):
  tune      forward and backward block sizes and warps at two shapes (paper L 32768, batch 8 dim 1536 L 4096),
            then the long-sequence split's target warps per SM at batch 1, dim 128, L 2^20. The best are adopted
            into ts.DEFAULT_CONFIG for the sections after it, in this process only (row "tune_adopted"): to keep
            them, write them into ScanConfig's defaults (kernels/selective_scan/triton_scan.py)
  regs      register caps (maxnreg) of the forward (with the split forced at L = 2048) and of the backward, chunk
            64 and 32 (ScanConfig.maxnreg_fwd / maxnreg_bwd)
  regs_bwd  the backward's part of regs alone
  split     the long-sequence split forced on grids that fill the GPU only once (target_warps_per_sm)
  copies    dB/dC accumulator copies (ScanConfig.acc_copies: the memory-capped rule, then 1..16 copies) in the
            backward at the training shapes (Table 1: batch 64, dim 128, L 4128; induction: 8, 128, 256) and
            the paper's L 2048, where channels of a batch element add into the same addresses at once

Clocks, copy bandwidth and the device are the profiler's (ssmbench/perf/timing.py: time_call is do_bench on CUDA,
a perf_counter loop on the CPU, where the Triton kernels need TRITON_INTERPRET=1). Rows (kind "kernel_sweep",
one file per section and commit) go through the profiler's row store, <results_root>/<study>/rows/*.json, and
its report (ssmbench/perf/report.py: rows.csv and summary.md, one table per section), written after each
section and at the end, also when stopped by SIGTERM (`timeout`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from pathlib import Path

import torch

from ssmbench.env import environment, resolve_device
from ssmbench.kernels.selective_scan import triton_scan as ts
from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
from ssmbench.kernels.selective_scan.triton_scan import ScanConfig
from ssmbench.perf.report import write_profile_report
from ssmbench.perf.timing import copy_bandwidth_gbps, free_memory, time_call
from ssmbench.results import rows_path, run_id, write_rows

log = logging.getLogger("scan_sweeps")

SECTIONS = ("tune", "regs", "regs_bwd", "split", "copies")
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# The shapes of each sweep (batch, dim, L); module constants so that a test can shrink them.
TUNE_SHAPES = [(1, 1024, 32768), (8, 1536, 4096)]
LONG_SHAPE = (1, 128, 2 ** 20)
REGS_SHAPES = [(1, 1024, 2048), (1, 1024, 32768), (8, 1536, 4096)]
SPLIT_SHAPES = [(1, 1024, 8192), (1, 1024, 32768), (1, 1024, 131072), (8, 1536, 4096)]
SHORT_L = 2048  # regs: at and below this L the forward is latency-bound, and the forced split is timed too
SPLIT_TARGETS = (None, 16, 24, 32, 64)  # split: warps per SM the forced split aims at (None: not forced)
COPIES_SHAPES = [(64, 128, 4128), (8, 128, 256), (1, 1024, 2048)]
COPIES = (None, 1, 2, 4, 8, 16)  # copies: accumulator copies (None: the rule of triton_scan._n_copies)


class Sweeps:
    """The device, its copy bandwidth, the environment every row carries, and the rows of each section (each
    section's rows written to the store after every row)."""

    def __init__(self, device: torch.device, results_root: str, study: str, warmup_ms: float, rep_ms: float):
        self.device, self.results_root, self.study = device, results_root, study
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.env = environment(device)
        nbytes = 2 * 1024 ** 3 if device.type == "cuda" else 1 << 24
        self.copy_gbps = copy_bandwidth_gbps(device, nbytes, warmup_ms, rep_ms)
        log.info("%s; copy bandwidth %.1f GB/s", self.env["device"], self.copy_gbps)
        self.rows: dict[str, list[dict]] = {}
        self._reported = 0  # rows in the last report written

    def ms(self, fn) -> float:
        return time_call(fn, self.device, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms).median_ms

    def row(self, section: str, **fields) -> None:
        identity = {"kind": "kernel_sweep", "section": section, "device": self.env["device"],
                    "commit": self.env["commit"]}
        rid = run_id(identity)
        row = {"kind": "kernel_sweep", "study": self.study, "run_id": rid, "section": section, **fields,
               "copy_gbps": self.copy_gbps, **self.env, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S")}
        rows = self.rows.setdefault(section, [])
        rows.append(row)
        write_rows(rows_path(self.results_root, self.study, rid), rows)
        log.info("  %s", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()))

    def report(self) -> None:
        """The report of the rows so far; skipped when no row came since the last one (after each section, and
        once more at the end in case a section was cut short)."""
        n = sum(map(len, self.rows.values()))
        if not n or n == self._reported:
            return
        folder = Path(self.results_root) / self.study
        write_profile_report(folder)
        self._reported = n
        log.info("report: %s", folder / "summary.md")

    # -- inputs and the two passes ---------------------------------------------------------------------------

    def inputs(self, B: int, D: int, L: int):
        """The scan's arguments in _fwd/_bwd order, and an output gradient."""
        gen = torch.Generator(device=self.device).manual_seed(0)
        inp = paper_scan_inputs(B, D, L, 16, torch.bfloat16, True, generator=gen)
        return [inp[k] for k in ARG_NAMES], torch.randn(inp["u"].shape, device=self.device, generator=gen).to(
            inp["u"].dtype)

    def fwd_ms(self, args, cfg: ScanConfig, long_sequence: bool, store_ckpt: bool = True) -> float | None:
        """Median ms of the forward (checkpoints stored, or the final state alone), or None with the reason logged
        when the config cannot run (out of resources etc.)."""
        try:
            return self.ms(lambda: ts._fwd(*args, True, cfg, long_sequence, store_ckpt, not store_ckpt))
        except Exception as e:
            log.info("  fwd %s: %s %s", cfg, type(e).__name__, str(e)[:100])
            return None

    def bwd_ms(self, args, dout, cfg: ScanConfig, long_sequence: bool = False) -> float | None:
        """Median ms of the backward alone (its forward's checkpoints made outside the timing), or None."""
        try:
            _, ckpt, _ = ts._fwd(*args, True, cfg, long_sequence, True)
            return self.ms(lambda: ts._bwd(dout, None, *args, ckpt, True, cfg, long_sequence))
        except Exception as e:
            log.info("  bwd %s: %s %s", cfg, type(e).__name__, str(e)[:100])
            return None


def _pick(best: dict, kind: str, key) -> tuple:
    """The config with the smallest sum over shapes of time / best time at that shape."""
    score: dict = {}
    for (kd, *_), v in best.items():
        if kd == kind:
            t0 = min(ms for ms, _ in v)
            for ms, c in v:
                score[key(c)] = score.get(key(c), 0.0) + ms / t0
    return min(score, key=score.get)


def tune(sw: Sweeps) -> None:
    log.info("== tune: forward and backward launch parameters (ms)")
    bwd_cfgs = [ScanConfig(chunk=ch, warps_bwd=w, block_l_fwd=ch, warps_fwd=1) for ch in (32, 64, 128)
                for w in (1, 2, 4) if ch * 16 // (32 * w) >= 4]
    best: dict = {}
    inputs = {shape: sw.inputs(*shape) for shape in TUNE_SHAPES}
    for (B, D, L), (args, dout) in inputs.items():
        for cfg in bwd_cfgs:
            ms = sw.bwd_ms(args, dout, cfg)
            if ms is not None:
                sw.row("tune_bwd", B=B, D=D, L=L, chunk=cfg.chunk, warps=cfg.warps_bwd, ms=ms)
                best.setdefault(("bwd", B, D, L), []).append((ms, cfg))
    if not best:
        raise RuntimeError("tune: no backward config ran")
    ch, wb = _pick(best, "bwd", lambda c: (c.chunk, c.warps_bwd))
    fwd_cfgs = [ScanConfig(block_l_fwd=bl, warps_fwd=w, chunk=ch) for bl in (64, 128, 256) for w in (1, 2)
                if bl % ch == 0 or ch % bl == 0]
    for (B, D, L), (args, _) in inputs.items():
        for cfg in fwd_cfgs:
            ms = sw.fwd_ms(args, cfg, False)
            if ms is not None:
                sw.row("tune_fwd", B=B, D=D, L=L, block_l=cfg.block_l_fwd, warps=cfg.warps_fwd, chunk=ch, ms=ms)
                best.setdefault(("fwd", B, D, L), []).append((ms, cfg))
    del inputs
    for k, v in best.items():
        v.sort(key=lambda x: x[0])
        log.info("  best %s: %s", k, "; ".join(f"{ms:.4f} bl={c.block_l_fwd} ch={c.chunk} wf={c.warps_fwd} "
                                               f"wb={c.warps_bwd}" for ms, c in v[:4]))
    bl, wf = _pick(best, "fwd", lambda c: (c.block_l_fwd, c.warps_fwd))
    ts.DEFAULT_CONFIG = dataclasses.replace(ts.DEFAULT_CONFIG, block_l_fwd=bl, warps_fwd=wf, chunk=ch, warps_bwd=wb)
    # the long-sequence split: how many warps per SM to aim for
    args, dout = sw.inputs(*LONG_SHAPE)
    long = []
    for tw in (32, 64, 128):
        cfg = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=tw)
        ms = sw.fwd_ms(args, cfg, True)
        segs = ts.LAST_LAUNCH.get("fwd_segments")
        msb = sw.bwd_ms(args, dout, cfg, long_sequence=True)
        if ms is None or msb is None:
            continue
        B, D, L = LONG_SHAPE
        sw.row("tune_long", B=B, D=D, L=L, target_warps_per_sm=tw, fwd_segments=segs, fwd_ms=ms,
               bwd_segments=ts.LAST_LAUNCH.get("bwd_segments"), bwd_ms=msb)
        long.append((ms + msb, tw))
    if long:
        ts.DEFAULT_CONFIG = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=min(long)[1])
    sw.row("tune_adopted", **dataclasses.asdict(ts.DEFAULT_CONFIG))
    log.info("  adopted %s (used by the sections below, in this process)", ts.DEFAULT_CONFIG)


def regs(sw: Sweeps, forward: bool = True) -> None:
    """Register caps against occupancy: at 255 registers a one-warp program leaves 8 warps per SM. Forward and
    backward timed separately (section regs_bwd: the backward alone)."""
    log.info("== regs: register caps of the forward and backward kernels (ms)")
    for (B, D, L) in REGS_SHAPES:
        args, dout = sw.inputs(B, D, L)
        # At short L the paper config's one-warp programs are all resident at once, each walking few blocks:
        # latency-bound. There the forced split (more, shorter programs) is timed with each cap too.
        variants = ([(None, 128), (None, 64), (16, 128), (32, 128), (64, 128), (32, 64)] if L <= SHORT_L
                    else [(None, 128)])  # (warps per SM the forced split aims at, forward block)
        for cap in (None, 168, 128) if forward else ():
            for tw, bl in variants:
                cfg = dataclasses.replace(ts.DEFAULT_CONFIG, maxnreg_fwd=cap, target_warps_per_sm=tw or 128,
                                          block_l_fwd=bl)
                for store in (True, False):
                    ms = sw.fwd_ms(args, cfg, tw is not None, store)
                    if ms is not None:
                        sw.row("regs", pass_="fwd", B=B, D=D, L=L, block_l=bl, chunk=cfg.chunk, maxnreg=cap or 255,
                               stores="checkpoints" if store else "last state",
                               segments=ts.LAST_LAUNCH.get("fwd_segments"), ms=ms)
        for chunk in (64, 32):
            for cap in (None, 200, 168, 128):
                ms = sw.bwd_ms(args, dout, dataclasses.replace(ts.DEFAULT_CONFIG, chunk=chunk, maxnreg_bwd=cap))
                if ms is not None:
                    sw.row("regs", pass_="bwd", B=B, D=D, L=L, chunk=chunk, maxnreg=cap or 255,
                           reverse=ts.LAST_LAUNCH.get("bwd_reverse"), ms=ms)
        del args, dout
        free_memory(sw.device)


def split(sw: Sweeps) -> None:
    """The long-sequence split (more, shorter programs, plus a pass for the carries) forced where the heuristic
    does not take it: at batch 1, dim 1024 the one-warp programs leave ~8 warps per SM, too few to hide the
    backward's atomics and the scans' latencies. target_warps_per_sm sets how many segments (0: not forced)."""
    log.info("== split: forced long-sequence split at grids of one wave (ms)")
    for (B, D, L) in SPLIT_SHAPES:
        args, dout = sw.inputs(B, D, L)
        for tw in SPLIT_TARGETS:
            cfg = dataclasses.replace(ts.DEFAULT_CONFIG, target_warps_per_sm=tw or 128)
            forced = tw is not None
            ms = sw.fwd_ms(args, cfg, forced)
            if ms is not None:
                sw.row("split", pass_="fwd", B=B, D=D, L=L, target_warps_per_sm=tw or 0,
                       segments=ts.LAST_LAUNCH.get("fwd_segments"), ms=ms)
            msb = sw.bwd_ms(args, dout, cfg, long_sequence=forced)
            if msb is not None:
                sw.row("split", pass_="bwd", B=B, D=D, L=L, target_warps_per_sm=tw or 0,
                       segments=ts.LAST_LAUNCH.get("bwd_segments"), ms=msb)
        del args, dout
        free_memory(sw.device)


def copies(sw: Sweeps) -> None:
    """The backward's dB/dC accumulator copies: more copies spread the channels' atomics over more addresses, at
    the price of zeroing and summing the copies (both inside the timed backward) and their memory."""
    log.info("== copies: dB/dC accumulator copies in the backward (ms)")
    for (B, D, L) in COPIES_SHAPES:
        args, dout = sw.inputs(B, D, L)
        for n in COPIES:
            cfg = dataclasses.replace(ts.DEFAULT_CONFIG, acc_copies=n)
            ms = sw.bwd_ms(args, dout, cfg)
            if ms is not None:
                # what the backward uses, from the wrapper's own rule; B/C [batch, 1, N, L], both time-varying
                var_numel = args[3].numel()
                used = ts.accumulator_copies(cfg, 2, var_numel, D, args[0])
                per_copy = 2 * var_numel * 4  # bytes of fp32 dB and dC in one copy
                sw.row("copies", pass_="bwd", B=B, D=D, L=L, copies="rule" if n is None else n, copies_used=used,
                       acc_mib=used * per_copy / 2 ** 20, reverse=ts.LAST_LAUNCH.get("bwd_reverse"), ms=ms)
        del args, dout
        free_memory(sw.device)


def _on_term(*_):
    raise KeyboardInterrupt("SIGTERM")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="tune", help=f"comma-separated, of {','.join(SECTIONS)}")
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--study", default="scan_sweeps")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (cpu: TRITON_INTERPRET=1)")
    ap.add_argument("--warmup-ms", type=float, default=25.0)
    ap.add_argument("--rep-ms", type=float, default=100.0)
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _on_term)  # `timeout` sends SIGTERM: still write the report of what was measured
    sw = Sweeps(resolve_device(args.device), args.results_root, args.study, args.warmup_ms, args.rep_ms)
    t0 = time.perf_counter()
    try:
        if "tune" in sections:
            tune(sw)
            sw.report()
        if "regs" in sections or "regs_bwd" in sections:
            regs(sw, forward="regs" in sections)
            sw.report()
        if "split" in sections:
            split(sw)
            sw.report()
        if "copies" in sections:
            copies(sw)
    finally:
        sw.report()
        log.info("done in %.1f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
