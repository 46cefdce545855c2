"""Evaluation at one or more lengths: accuracy and loss on the scored positions, tokens/s, peak memory.

A model trained at one length is tested on fresh data at others (induction heads trained at 256, tested at
2^6 .. 2^20). Each length is independent: running out of memory at 2^20 leaves an "oom" row for that length
and the other lengths keep their results.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any

import torch

from .metrics import (
    Stopwatch,
    free_cached_memory,
    is_out_of_memory,
    loss_and_accuracy,
    peak_memory_bytes,
    reset_peak_memory,
    sample_memory,
)


def eval_batch_size(seq_len: int, batch_size: int, max_tokens: int) -> int:
    return max(1, min(batch_size, max_tokens // seq_len))


@torch.no_grad()
def evaluate_length(model, task, seq_len: int, generator: torch.Generator, batches: int, batch_size: int,
                    max_tokens: int, device: torch.device, autocast,
                    time_budget_s: float | None = None) -> dict[str, Any]:
    """Accuracy and loss over `batches` fresh batches at `seq_len` (fewer when `time_budget_s` runs out first: the
    row's `eval_batches` and `eval_scored` say how many were scored, so a long length's estimate shows its size)."""
    model.eval()
    bs = eval_batch_size(seq_len, batch_size, max_tokens)
    correct = total = 0
    loss_sum = 0.0
    reset_peak_memory(device)
    watch = Stopwatch(device)
    done = 0
    started = time.perf_counter()
    try:
        for _ in range(batches):
            if done and time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                break
            done += 1
            batch = task.sample(bs, seq_len, generator)
            with watch, autocast():
                logits = model(batch.inputs)
            loss, c, n = loss_and_accuracy(logits, batch.targets)
            sample_memory(device)
            correct, total = correct + int(c), total + int(n)
            loss_sum += float(loss) * int(n)
            del logits
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        free_cached_memory(device)
        return {"eval_len": seq_len, "status": "oom", "error": str(e).splitlines()[0], "accuracy": math.nan,
                "loss": math.nan, "eval_tokens_per_s": math.nan, "eval_peak_mem_bytes": peak_memory_bytes(device),
                "eval_batch_size": bs}
    finally:
        model.train()
    return {
        "eval_len": seq_len,
        "status": "ok",
        "error": "",
        "accuracy": correct / max(total, 1),
        "loss": loss_sum / max(total, 1),
        "eval_tokens_per_s": done * bs * seq_len / max(watch.total, 1e-9),
        "eval_peak_mem_bytes": peak_memory_bytes(device),
        "eval_batch_size": bs,
        "eval_batches": done,
        "eval_scored": total,
    }


def autocast_factory(device: torch.device, precision: str):
    """precision: fp32 | bf16. Returns a zero-argument context factory."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext
