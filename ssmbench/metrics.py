"""Measurements shared by training and evaluation: loss/accuracy on scored positions, memory, timing."""

from __future__ import annotations

import resource
import sys
import time

import torch
import torch.nn.functional as F

from ssmbench.tasks import IGNORE


def loss_and_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the scored positions; (number correct, number scored) as tensors (no sync)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)
    scored = targets != IGNORE
    correct = ((logits.argmax(-1) == targets) & scored).sum()
    return loss, correct, scored.sum()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# On the CPU the OS keeps only the process's lifetime peak (ru_maxrss), which every run of a sweep in one
# process would share; so the CPU peak is sampled: the largest resident set size seen since the last reset, at the
# points that call sample_memory (each log read and check of training, each evaluation batch) and at the read.
_cpu_peak = 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the lifetime peak is the best there is
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)


def reset_peak_memory(device: torch.device) -> None:
    global _cpu_peak
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _cpu_peak = _rss_bytes()


def sample_memory(device: torch.device) -> None:
    """Note the CPU's resident set size now (the CUDA allocator tracks its own peak: nothing to do there)."""
    global _cpu_peak
    if device.type != "cuda":
        _cpu_peak = max(_cpu_peak, _rss_bytes())


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA allocator peak since the last reset on GPU; on the CPU the largest resident set size sampled since
    the last reset (the whole process's memory, the Python interpreter and libraries included)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    sample_memory(device)
    return int(_cpu_peak)


class Stopwatch:
    """Accumulates time over several start/stop intervals, synchronising the device at each edge."""

    def __init__(self, device: torch.device):
        self.device, self.total, self._t0 = device, 0.0, None

    def __enter__(self):
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.total += time.perf_counter() - self._t0
        return False


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA allocator OOM, or the CPU allocator failing."""
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e))


def free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
