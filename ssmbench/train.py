"""The training loop: AdamW, warmup then constant or cosine learning rate, gradient clipping, bf16 autocast on
GPU, fresh data every step, periodic held-out accuracy (with optional early stop), a progress bar.

Divergence is a result, not a crash: a non-finite loss ends training with status "nan".
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .config import TrainerConfig
from .evaluate import evaluate_length
from .metrics import Stopwatch, loss_and_accuracy, peak_memory_bytes, reset_peak_memory

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")


class TrainerConfigError(ValueError):
    pass


def validate_trainer(cfg: TrainerConfig) -> None:
    def bad(key, msg):
        raise TrainerConfigError(f"trainer.{key} {msg}, got {getattr(cfg, key)!r}")

    for key in ("steps", "batch_size", "check_every"):
        if getattr(cfg, key) <= 0:
            bad(key, "must be > 0")
    if not cfg.lr > 0:
        bad("lr", "must be > 0")
    if cfg.ssm_lr is not None and not cfg.ssm_lr > 0:
        bad("ssm_lr", "must be > 0 or null")
    if cfg.weight_decay < 0:
        bad("weight_decay", "must be >= 0")
    if cfg.warmup_steps < 0:
        bad("warmup_steps", "must be >= 0")
    if cfg.schedule not in SCHEDULES:
        bad("schedule", f"must be one of {SCHEDULES}")
    if not 0 <= cfg.min_lr_ratio <= 1:
        bad("min_lr_ratio", "must be in [0, 1]")
    if cfg.grad_clip < 0:
        bad("grad_clip", "must be >= 0 (0 disables clipping)")
    if cfg.precision not in PRECISIONS:
        bad("precision", f"must be one of {PRECISIONS}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        bad("betas", "must be two numbers in [0, 1)")
    if cfg.target_accuracy is not None and not 0 < cfg.target_accuracy <= 1:
        bad("target_accuracy", "must be in (0, 1] or null")
    if cfg.max_time_s is not None and not cfg.max_time_s > 0:
        bad("max_time_s", "must be > 0 or null")


def lr_lambda(cfg: TrainerConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


@dataclass
class TrainResult:
    status: str = "ok"  # ok | nan | oom (error statuses are raised and recorded by the runner)
    error: str = ""
    steps: int = 0
    train_time_s: float = 0.0
    train_tokens_per_s: float = math.nan
    train_peak_mem_bytes: int = 0
    final_train_loss: float = math.nan
    final_train_accuracy: float = math.nan
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)  # held-out checks: step, accuracy, loss


def train(model, task, cfg: TrainerConfig, device: torch.device, autocast, generator: torch.Generator,
          check_generator_seed: int, desc: str = "") -> TrainResult:
    groups = model.param_groups(cfg.weight_decay, cfg.ssm_lr)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas),
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    res = TrainResult()
    watch = Stopwatch(device)
    reset_peak_memory(device)
    seq_len = task.seq_len
    loss_ema = acc_ema = None
    started = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True, mininterval=1.0)
    model.train()
    for step in bar:
        with watch:
            batch = task.sample(cfg.batch_size, None, generator)
            with autocast():
                logits = model(batch.inputs)
            loss, correct, scored = loss_and_accuracy(logits, batch.targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
        res.steps = step + 1
        loss_v = float(loss.detach())
        if not math.isfinite(loss_v):
            res.status, res.error = "nan", f"non-finite training loss ({loss_v}) at step {step + 1}"
            break
        acc_v = int(correct) / max(int(scored), 1)
        loss_ema = loss_v if loss_ema is None else 0.9 * loss_ema + 0.1 * loss_v
        acc_ema = acc_v if acc_ema is None else 0.9 * acc_ema + 0.1 * acc_v
        res.final_train_loss, res.final_train_accuracy = loss_v, acc_v
        bar.set_postfix(loss=f"{loss_ema:.3f}", acc=f"{acc_ema:.3f}", refresh=False)
        last = step + 1 == cfg.steps
        if (step + 1) % cfg.check_every == 0 and not last:
            # The check resets the allocator's peak, so bank the training peak first.
            res.train_peak_mem_bytes = max(res.train_peak_mem_bytes, peak_memory_bytes(device))
            # Held-out check on the same fixed batches every time (its own generator, reseeded).
            g = torch.Generator(device=generator.device).manual_seed(check_generator_seed)
            check = evaluate_length(model, task, seq_len, g, batches=1, batch_size=cfg.batch_size,
                                    max_tokens=1 << 62, device=device, autocast=autocast)
            res.history.append({"step": step + 1, "accuracy": check["accuracy"], "loss": check["loss"]})
            if cfg.target_accuracy is not None and check["accuracy"] >= cfg.target_accuracy:
                res.stopped_early = True
                break
        if cfg.max_time_s is not None and time.perf_counter() - started > cfg.max_time_s:
            res.stopped_early = True
            break
    bar.close()
    res.train_time_s = watch.total
    res.train_tokens_per_s = res.steps * cfg.batch_size * seq_len / max(watch.total, 1e-9)
    res.train_peak_mem_bytes = max(res.train_peak_mem_bytes, peak_memory_bytes(device))
    return res
