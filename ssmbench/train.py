"""The training loop: AdamW, warmup then constant or cosine learning rate, gradient clipping, bf16 autocast on
GPU, fresh data every step, periodic held-out accuracy (with optional early stop), a progress bar.

The step itself (eager or a replayed CUDA graph) is in step.py; it never makes the host wait for the GPU, and
this loop reads the device-side meters only every `log_every` steps and at checks.

Durable: with a run folder, the loop checkpoints every `checkpoint_every_s` seconds / `checkpoint_every_steps`
steps and whenever it stops early; a later call for the same run continues from the checkpoint. `max_time_s` is
this call's budget: at its end (or on SIGTERM, as a cluster sends before preempting) the run checkpoints and
returns status "paused". Divergence is a result, not a crash: a non-finite loss ends training with status "nan".
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, write_progress
from .config import TrainerConfig
from .evaluate import evaluate_length
from .gpu_turns import GPU_TURNS
from .kernels.common.options import LEGACY as LEGACY_KERNEL_OPTIONS
from .kernels.common.options import describe as describe_kernel_options
from .kernels.common.options import same as same_kernel_options
from .metrics import peak_memory_bytes, reset_peak_memory, sample_memory, synchronize
from .step import COMPILE_MODES, STEP_MODES, TrainStep, max_grad_norm

log = logging.getLogger("ssmbench")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")


class TrainerConfigError(ValueError):
    pass


def validate_trainer(cfg: TrainerConfig) -> None:
    def bad(key, msg):
        raise TrainerConfigError(f"trainer.{key} {msg}, got {getattr(cfg, key)!r}")

    for key in ("steps", "batch_size", "check_every", "log_every"):
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
    for key in ("max_time_s", "max_train_time_s", "checkpoint_every_s", "checkpoint_every_steps", "check_batch_size"):
        if getattr(cfg, key) is not None and not getattr(cfg, key) > 0:
            bad(key, "must be > 0 or null")
    if cfg.step_mode not in STEP_MODES:
        bad("step_mode", f"must be one of {STEP_MODES}")
    if cfg.compile not in COMPILE_MODES:
        bad("compile", f"must be one of {COMPILE_MODES}")


@dataclass
class TrainResult:
    status: str = "ok"  # ok | nan | paused (error statuses are raised and recorded by the runner)
    error: str = ""
    steps: int = 0
    train_time_s: float = 0.0  # summed over every call that trained this run
    train_tokens_per_s: float = math.nan
    train_peak_mem_bytes: int = 0
    final_train_loss: float = math.nan  # the last step's
    final_train_accuracy: float = math.nan
    stopped_early: bool = False
    # held-out checks: step, accuracy, loss; and since session 11 grad_norm_max, the largest gradient norm before
    # clipping over the steps since the previous check (None without clipping; a run resumed from an older
    # checkpoint counts from the resume)
    history: list[dict] = field(default_factory=list)
    # that maximum so far for the next check, kept across a pause in the checkpoint (with the unread steps' maximum:
    # _pending_grad_norm; an ensemble member killed and resumed may miss the steps since its last read)
    grad_norm_max_since_check: float | None = None
    resumes: int = 0  # how many times this run continued from a checkpoint
    step_mode: str = "eager"  # eager | graphs, as actually run
    step_mode_reason: str = ""  # why graphs fell back to eager, if they did
    compile: str = "none"  # trainer.compile as actually run (none where compiling failed: the reason above)
    # the step's implementation choices (kernels/common/options.py) of every call that trained this run, in order,
    # one entry per change: "A" when every piece ran under A, "A then B" when later pieces switched
    kernel_options: str = ""


# Set by a process that trains several runs in threads (ssmbench.multirun) when it gets SIGTERM or SIGUSR2: Python
# calls signal handlers in the main thread only, so that process's main thread catches them and every run's loop
# checkpoints and pauses as it would on its own signal.
STOP_ALL = threading.Event()


class _StopRequest:
    """SIGTERM (what SLURM and most schedulers send before killing a job) and SIGUSR2 (what submitit has SLURM send
    before a job's time limit, and on preemption where the cluster signals it) ask the loop to checkpoint and
    pause. Installed only in the main thread, where Python allows signal handlers."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.requested, self.signum, self._previous = False, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.requested, self.signum = True, signum

    def forward(self) -> None:
        """Hand the signal on to what was there before, once our checkpoint is written: a Python handler is called
        (submitit's requeues the job on SIGUSR2, which then continues from the checkpoint); where the default
        action was in place the signal is raised again, so the process ends as the sender meant (a sweep stops
        rather than going on to its next run); an ignored signal stays ignored."""
        if self.signum is None:
            return
        previous = self._previous.get(self.signum)
        if callable(previous):
            previous(self.signum, None)
        elif previous == signal.SIG_DFL:
            signal.signal(self.signum, signal.SIG_DFL)
            os.kill(os.getpid(), self.signum)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            if previous is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(sig, previous)
        return False


def _restore(ckpt: dict, model, step: TrainStep, generator: torch.Generator, res: TrainResult,
             device: torch.device) -> int:
    model.load_state_dict(ckpt["model"])
    step.load_state_dict(ckpt["train_step"], ckpt["step"])
    generator.set_state(ckpt["generator"])
    with GPU_TURNS.exclusive():  # the global generators are the process's (runs in threads: gpu_turns)
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state(ckpt["cuda_rng"][0], device)
    res.history = list(ckpt["history"])
    res.train_time_s = float(ckpt["train_time_s"])
    res.train_peak_mem_bytes = int(ckpt["train_peak_mem_bytes"])
    res.final_train_loss, res.final_train_accuracy = ckpt["final_train_loss"], ckpt["final_train_accuracy"]
    res.resumes = int(ckpt["resumes"]) + 1
    # checkpoints from before the options existed trained under the legacy paths (the defaults until session 9)
    res.kernel_options = ckpt.get("kernel_options") or LEGACY_KERNEL_OPTIONS
    res.grad_norm_max_since_check = ckpt.get("grad_norm_max_since_check")
    return int(ckpt["step"])


def note_grad_norm(res: TrainResult, window_max: float | None) -> None:
    """Fold one meters read's gradient-norm maximum into the run's maximum since its last check."""
    res.grad_norm_max_since_check = max_grad_norm(res.grad_norm_max_since_check, window_max)


def record_check(res: TrainResult, step: int, check: dict) -> str:
    """Append the held-out check at `step` to the run's history, with the largest gradient norm since the previous
    check (which starts again); returns that norm as text for the log line ('' without one)."""
    norm = res.grad_norm_max_since_check
    res.history.append({"step": step, "accuracy": check["accuracy"], "loss": check["loss"], "grad_norm_max": norm})
    res.grad_norm_max_since_check = None
    return "" if norm is None else f", largest gradient norm {norm:.3g} since the last check"


def check_scalars(res: TrainResult, read: dict) -> dict[str, float]:
    """What experiment tracking logs at a check (after record_check): the held-out check, the training window's
    loss and accuracy, and the largest gradient norm since the previous check where clipping computed one."""
    last = res.history[-1]
    scalars = {"heldout/accuracy": last["accuracy"], "heldout/loss": last["loss"], "train/loss": read["loss"],
               "train/accuracy": read["accuracy"]}
    if last.get("grad_norm_max") is not None:
        scalars["train/grad_norm_max"] = last["grad_norm_max"]
    return scalars


def note_kernel_options(res: TrainResult) -> None:
    """Add this call's kernel options to the run's record, unless the last piece ran under the same."""
    now = describe_kernel_options()
    if not res.kernel_options or not same_kernel_options(res.kernel_options.rsplit(" then ", 1)[-1], now):
        res.kernel_options = f"{res.kernel_options} then {now}" if res.kernel_options else now


def _pending_grad_norm(res: TrainResult, step) -> float | None:
    """The largest gradient norm since the last check, the steps not yet read from the meters included: a periodic
    checkpoint is written between reads, and a run killed and resumed from it must meter what an uninterrupted run
    does (the caller has synchronised). An ensemble member's view has no meters of its own: its folded value only."""
    meters = getattr(step, "meters", None)
    if meters is None or meters.members is not None or not meters.tracks_grad_norm:
        return res.grad_norm_max_since_check
    return max_grad_norm(res.grad_norm_max_since_check, float(meters.grad_norm_max))


def _checkpoint(folder: Path, run_id: str, done: int, model, step: TrainStep, generator: torch.Generator,
                res: TrainResult, device: torch.device, status: str) -> None:
    with GPU_TURNS.exclusive():  # the global generators are the process's (runs in threads: gpu_turns)
        torch_rng = torch.get_rng_state()
        cuda_rng = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    state = {
        "run_id": run_id, "step": done, "model": model.state_dict(), "train_step": step.state_dict(),
        "generator": generator.get_state(), "torch_rng": torch_rng, "cuda_rng": cuda_rng,
        "history": res.history, "train_time_s": res.train_time_s, "train_peak_mem_bytes": res.train_peak_mem_bytes,
        "final_train_loss": res.final_train_loss, "final_train_accuracy": res.final_train_accuracy,
        "resumes": res.resumes, "step_mode": step.mode, "written_at": time.time(),
        "kernel_options": res.kernel_options, "grad_norm_max_since_check": _pending_grad_norm(res, step),
    }
    save_checkpoint(folder / CHECKPOINT, state)
    write_progress(folder, {"run_id": run_id, "status": status, "step": done, "train_time_s": res.train_time_s,
                            "resumes": res.resumes, "last_check": res.history[-1] if res.history else None,
                            "history": res.history,
                            "updated": time.strftime("%Y-%m-%d %H:%M:%S")})


def train(model, task, cfg: TrainerConfig, device: torch.device, precision: str, autocast,
          generator: torch.Generator, check_generator_seed: int, desc: str = "", run_folder: Path | None = None,
          run_id: str = "", on_check=None) -> TrainResult:
    """Train `model` for `cfg.steps` steps (or until an early stop or a pause). With `run_folder`, continue from
    the checkpoint there if there is one, and write checkpoints to it. `on_check(step, scalars)` is called at each
    held-out check (experiment tracking)."""
    invocation_start = time.perf_counter()
    step = TrainStep(model, task, cfg, device, precision, cfg.step_mode)
    res = TrainResult()
    done = 0
    ckpt = load_checkpoint(run_folder / CHECKPOINT, run_id) if run_folder is not None else None
    if ckpt is not None:
        done = _restore(ckpt, model, step, generator, res, device)
    note_kernel_options(res)
    seq_len = task.seq_len
    reset_peak_memory(device)
    bar = tqdm(total=cfg.steps, initial=done, desc=desc, disable=not cfg.progress, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    model.train()
    synchronize(device)
    segment_start = last_ckpt_time = time.perf_counter()
    last_ckpt_step = done

    def bank_time():  # training time excludes checks and checkpoints; call after a sync
        nonlocal segment_start
        now = time.perf_counter()
        res.train_time_s += now - segment_start
        segment_start = now

    with _StopRequest() as stop:
        while done < cfg.steps:
            step(task.sample(cfg.batch_size, None, generator))
            done += 1
            at_check = done % cfg.check_every == 0 and done < cfg.steps
            if at_check or done % cfg.log_every == 0 or done == cfg.steps:
                m = step.meters.read()  # the one host sync of the window
                bank_time()
                sample_memory(device)
                if m["first_bad_step"] >= 0:
                    bad = m["first_bad_step"] + 1
                    res.status, res.error = "nan", f"non-finite training loss at step {bad}"
                    done = bad
                    break
                res.final_train_loss, res.final_train_accuracy = m["last_loss"], m["last_accuracy"]
                note_grad_norm(res, m["grad_norm_max"])
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}", refresh=False)
            if at_check:
                # The check resets the allocator's peak, so bank the training peak first.
                res.train_peak_mem_bytes = max(res.train_peak_mem_bytes, peak_memory_bytes(device))
                # Held-out check on the same fixed batches every time (its own generator, reseeded).
                g = torch.Generator(device=generator.device).manual_seed(check_generator_seed)
                with GPU_TURNS.shared():
                    check = evaluate_length(model, task, seq_len, g, batches=1,
                                            batch_size=cfg.check_batch_size or cfg.batch_size,
                                            max_tokens=1 << 62, device=device, autocast=autocast)
                norm = record_check(res, done, check)
                log.info("%s step %d/%d: held-out accuracy %.4f loss %.4f | training loss %.4f (last %d steps)%s",
                         desc, done, cfg.steps, check["accuracy"], check["loss"], m["loss"], m["steps"], norm)
                if on_check is not None:  # experiment tracking (tracking.py), at the same cadence as the log
                    on_check(done, check_scalars(res, m))
                synchronize(device)
                segment_start = time.perf_counter()
                if cfg.target_accuracy is not None and check["accuracy"] >= cfg.target_accuracy:
                    res.stopped_early = True
                    break
            now = time.perf_counter()
            if cfg.max_train_time_s is not None and res.train_time_s + (now - segment_start) > cfg.max_train_time_s:
                res.stopped_early = True
                break
            out_of_budget = cfg.max_time_s is not None and now - invocation_start > cfg.max_time_s
            if run_folder is not None and done < cfg.steps and (out_of_budget or stop.requested or STOP_ALL.is_set()):
                res.status = "paused"
                break
            due = (cfg.checkpoint_every_s is not None and now - last_ckpt_time > cfg.checkpoint_every_s) or \
                  (cfg.checkpoint_every_steps is not None and done - last_ckpt_step >= cfg.checkpoint_every_steps)
            if run_folder is not None and due and done < cfg.steps:
                synchronize(device)
                bank_time()
                _checkpoint(run_folder, run_id, done, model, step, generator, res, device, "running")
                last_ckpt_time, last_ckpt_step = time.perf_counter(), done
                segment_start = last_ckpt_time
    bar.close()
    synchronize(device)
    if res.status != "nan":
        m = step.meters.read()
        if m["steps"]:
            res.final_train_loss, res.final_train_accuracy = m["last_loss"], m["last_accuracy"]
            note_grad_norm(res, m["grad_norm_max"])  # a pause keeps it in the checkpoint for the next check
    bank_time()
    res.steps = done
    res.train_peak_mem_bytes = max(res.train_peak_mem_bytes, peak_memory_bytes(device))
    res.train_tokens_per_s = done * cfg.batch_size * seq_len / max(res.train_time_s, 1e-9)
    res.step_mode, res.step_mode_reason, res.compile = step.mode, step.reason, step.compile
    if run_folder is not None and res.status in ("paused", "ok"):
        # Also when training is over: a call killed during the evaluation that follows then resumes there.
        _checkpoint(run_folder, run_id, done, model, step, generator, res, device,
                    "paused" if res.status == "paused" else "evaluating")
    if res.status == "paused":
        stop.forward()
    return res
