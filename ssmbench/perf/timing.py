"""The clocks every speed measurement shares (ssmbench/perf/*, scripts/*): one place for how a call is timed,
how samples are summarised and how memory is read, so two benchmarks that say "median ms" mean the same thing.

  time_call(fn, device)      median and spread of one call: triton.testing.do_bench on CUDA (CUDA events for
                             slow calls), a perf_counter loop on the CPU; the first call is never timed
  do_bench_all / do_bench_median   triton.testing.do_bench: every sample / the median (ms)
  cuda_event_ms(fn, device)  one call between two CUDA events (ms)
  wall_ms(fn, device, ...)   blocks of calls between two device synchronisations: ms per call of each block
  summarize(times_ms)        median, 20th and 80th percentiles, min (statistics.quantiles, inclusive)
  peak_memory / cuda_peak / allocator_peak   peak bytes during one call, or since the last reset
  free_memory(device)        garbage-collect, then hand the CUDA allocator's cached blocks back
  copy_bandwidth_gbps        bytes read + written per second by a device-to-device copy: the bandwidth ceiling
  Budget                     a wall-clock budget a sweep checks between points
  DTYPES                     the dtype names of the configs (bf16, fp16, fp32)

Device synchronisation, resetting the allocator's peak and the OOM test are the core's (ssmbench.metrics), and so
is naming the device (ssmbench.env); the helpers here build on them.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ssmbench.metrics import peak_memory_bytes, synchronize

__all__ = ["DTYPES", "Budget", "Timing", "allocator_peak", "clear_grads", "copy_bandwidth_gbps", "cuda_event_ms",
           "cuda_peak", "do_bench_all", "do_bench_median", "free_memory", "peak_memory",
           "summarize", "time_call", "wall_ms"]

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------------------------------------------------------
# Summaries

@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    min_ms: float
    samples: int
    timer: str  # do_bench | cuda_events | perf_counter


def summarize(times_ms: list[float], timer: str = "") -> Timing:
    """Median, 20th and 80th percentiles (inclusive method; one sample: itself), min and count."""
    ts = sorted(times_ms)

    def q(p: int) -> float:
        return ts[0] if len(ts) == 1 else statistics.quantiles(ts, n=100, method="inclusive")[p - 1]

    return Timing(statistics.median(ts), q(20), q(80), ts[0], len(ts), timer)


# ---------------------------------------------------------------------------------------------------------------
# Clocks

def clear_grads(tensors) -> None:
    for t in tensors or ():
        t.grad = None


def do_bench_all(fn, warmup_ms, rep_ms, grad_to_none) -> list[float]:
    """Every sample of triton.testing.do_bench (return_mode="all"; older versions: the quantiles)."""
    from triton.testing import do_bench
    try:
        times = do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, return_mode="all")
        if hasattr(times, "tolist"):
            times = times.tolist()
        if isinstance(times, (list, tuple)) and times:
            return [float(t) for t in times]
    except (AssertionError, ValueError, TypeError):
        pass
    qs = do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, quantiles=[0.0, 0.2, 0.5, 0.8])
    return [float(t) for t in qs]


def do_bench_median(fn, grad_to_none=None, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """triton.testing.do_bench's median (ms): L2 flushed between calls, gradients of grad_to_none reset."""
    from triton.testing import do_bench
    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none, return_mode="median")


def cuda_event_ms(fn: Callable[[], Any], device: torch.device | str) -> float:
    """One call of fn() between two CUDA events, in ms (the device synchronised before and after)."""
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end)


def time_call(fn: Callable[[], Any], device: torch.device, *, warmup_ms: float = 25.0, rep_ms: float = 100.0,
              grad_to_none: list[torch.Tensor] | None = None, slow_ms: float = 50.0, slow_samples: int = 3,
              max_samples: int = 1000) -> Timing:
    """Median and spread of fn()'s time in ms. The first call (compilation, autotuning, allocator warm-up) is
    never timed. CUDA: do_bench, or CUDA events around a few calls when one call takes more than slow_ms."""
    clear_grads(grad_to_none)
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        clear_grads(grad_to_none)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        est = start.elapsed_time(end)
        if est < slow_ms:
            return summarize(do_bench_all(fn, warmup_ms, rep_ms, grad_to_none), "do_bench")
        times = [est]
        n = max(slow_samples, min(10, int(rep_ms // max(est, 1e-3))))
        for _ in range(n - 1):
            clear_grads(grad_to_none)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        return summarize(times, "cuda_events")
    times = []
    budget_end = time.perf_counter() + rep_ms / 1e3
    while True:
        clear_grads(grad_to_none)
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        enough = len(times) >= (slow_samples if times[0] >= slow_ms else 3)
        if len(times) >= max_samples or (enough and time.perf_counter() >= budget_end):
            break
    return summarize(times, "perf_counter")


def wall_ms(fn: Callable[[], Any], device: torch.device | str, *, warmup: int = 0, repeats: int = 1,
            calls: int = 1, grad_to_none: list[torch.Tensor] | None = None) -> list[float]:
    """`warmup` untimed calls, then `repeats` blocks of `calls` calls queued back to back, the device
    synchronised at each block's edges only: the ms per call of each block (host wall clock, so host overhead
    counts wherever it exceeds the device's time). Gradients of grad_to_none are reset before every timed call."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            if grad_to_none:
                clear_grads(grad_to_none)
            fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) / calls * 1e3)
    return times


def copy_bandwidth_gbps(device: torch.device, nbytes: int, warmup_ms: float = 25.0, rep_ms: float = 100.0) -> float:
    """Bytes read + written per second (GB/s) by a device-to-device copy of `nbytes` (timed by time_call): the
    ceiling that achieved bandwidths are compared to."""
    n = max(1, nbytes // 4)
    x = torch.ones(n, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    t = time_call(lambda src=x, dst=y: dst.copy_(src), device, warmup_ms=warmup_ms, rep_ms=rep_ms)
    del x, y
    return 2 * n * 4 / (t.median_ms * 1e-3) / 1e9


class Budget:
    """Wall-clock time since construction, against an optional budget in seconds (None: no limit)."""

    def __init__(self, budget_s: float | None):
        self.t0, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self) -> bool:
        return self.budget_s is not None and self.elapsed() > self.budget_s


# ---------------------------------------------------------------------------------------------------------------
# Memory

def cuda_peak(fn: Callable[[], Any], device: torch.device | str) -> tuple[int, int]:
    """(the CUDA allocator's peak bytes during one call of fn(), bytes allocated just before it)."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device)), int(base)


def peak_memory(fn: Callable[[], Any], device: torch.device,
                grad_to_none: list[torch.Tensor] | None = None) -> tuple[int, float]:
    """(peak bytes during one call, peak above what was allocated before it). CUDA: the allocator's counters.
    CPU: the process's peak RSS (a running maximum) and NaN."""
    clear_grads(grad_to_none)
    if device.type != "cuda":
        fn()
        return peak_memory_bytes(device), math.nan
    peak, base = cuda_peak(fn, device)
    return peak, float(peak - base)


def allocator_peak(device: torch.device) -> float:
    """The CUDA allocator's peak bytes since the last reset (ssmbench.metrics.reset_peak_memory); NaN off CUDA."""
    return float(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else math.nan


def free_memory(device: torch.device) -> None:
    """Collect garbage (cycles holding tensors), then return the CUDA allocator's cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
