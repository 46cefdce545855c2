"""One optimisation step, run eagerly or replayed from a CUDA graph, with its meters kept on the device.

A step is: forward under autocast, loss and accuracy on the scored positions, backward, gradient clipping,
AdamW, learning-rate schedule. Nothing in it reads a device value on the host, so the host can queue the next
step while the GPU works; the loop reads the meters (`Meters.read`) only every `trainer.log_every` steps.

Two ways to run it, chosen by `trainer.step_mode`:
- "eager": PyTorch ops launched one by one (the CPU default, and the reference the graphs are tested against).
- "graphs": the whole step captured once as a CUDA graph and replayed, so a step costs the host one launch
  instead of a few hundred. The schedule then lives on the device too (a table of lr factors indexed by a device
  step counter) and AdamW runs fused and capturable. Capture can fail for a layer that syncs or allocates on the
  host; the step then falls back to eager and the reason goes into the row (`step_mode_reason`).
The batch is sampled outside the graph and copied into the graph's static input buffers.

`trainer.compile` (none by default) runs the forward and the loss through torch.compile, their backward with them:
Inductor fuses the element-wise chains and casts around the layers (on Table 1's LTI rows most of the step,
results/training/README.md); the custom Triton kernels stay as they are (graph breaks). It composes with either
mode: compiled code is captured like any other. If compiling fails, the step runs uncompiled and says why
(`reason`), like a capture that fails.
"""

from __future__ import annotations

import math
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

from .config import TrainerConfig
from .gpu_turns import GPU_TURNS
from .metrics import loss_and_accuracy

STEP_MODES = ("auto", "eager", "graphs")
# torch.compile modes; "reduce-overhead" and "max-autotune" are left out: they capture CUDA graphs of their own,
# which step_mode=graphs already does around the whole step
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")


def lr_factor(cfg: TrainerConfig, step: int) -> float:
    """Multiplier of the base learning rate at 0-based `step`: linear warmup, then constant or cosine."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_step_mode(mode: str, device: torch.device) -> str:
    if mode not in STEP_MODES:
        raise ValueError(f"trainer.step_mode={mode!r} is not one of {STEP_MODES}")
    if mode == "graphs" and device.type != "cuda":
        raise ValueError("trainer.step_mode=graphs needs a CUDA device; use eager (or auto) on the CPU")
    if mode == "auto":
        return "graphs" if device.type == "cuda" else "eager"
    return mode


class Meters:
    """Training loss and accuracy accumulated on the device between reads; the first non-finite step kept. With
    `members=k` (a batched ensemble, ssmbench.ensemble) every meter holds one value per member."""

    def __init__(self, device: torch.device, members: int | None = None):
        self.members = members
        shape = () if members is None else (members,)
        z = lambda dtype: torch.zeros(shape, device=device, dtype=dtype)  # noqa: E731
        self.loss_sum, self.correct = z(torch.float32), z(torch.int64)
        self.scored, self.count = z(torch.int64), z(torch.int64)
        self.last_loss, self.last_correct, self.last_scored = z(torch.float32), z(torch.int64), z(torch.int64)
        self.first_bad = torch.full(shape, -1, device=device, dtype=torch.int64)  # 0-based step of the first NaN/inf
        # The largest gradient norm before clipping since the last read: a loss spike shows in it first. Whether
        # any was given is known on the host (a step without clipping computes none), so the read says None then.
        self.grad_norm_max = z(torch.float32)
        self.tracks_grad_norm = False

    def add(self, loss: torch.Tensor, correct: torch.Tensor, scored: torch.Tensor, step: torch.Tensor,
            grad_norm: torch.Tensor | None = None) -> None:
        """All in-place device ops, so the same code runs eagerly and inside a captured graph."""
        if grad_norm is not None:
            self.tracks_grad_norm = True
            self.grad_norm_max.copy_(torch.maximum(self.grad_norm_max, grad_norm.detach().float()))
        loss = loss.detach().float()
        self.loss_sum.add_(loss)
        self.correct.add_(correct)
        self.scored.add_(scored)
        self.count.add_(1)
        self.last_loss.copy_(loss)
        self.last_correct.copy_(correct)
        self.last_scored.copy_(scored)
        bad = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(bad, step, self.first_bad))

    def read(self) -> dict | list[dict]:
        """One host sync: the window's mean loss and accuracy, the last step's, and the first bad step (or -1); a
        list of those, one per member, with `members`."""
        vals = torch.stack([self.loss_sum, self.correct.float(), self.scored.float(), self.count.float(),
                            self.last_loss, self.last_correct.float(), self.last_scored.float(),
                            self.first_bad.float(), self.grad_norm_max], dim=-1).tolist()
        for t in (self.loss_sum, self.correct, self.scored, self.count, self.grad_norm_max):
            t.zero_()
        rows = [_meter_row(*v, self.tracks_grad_norm) for v in (vals if self.members is not None else [vals])]
        return rows if self.members is not None else rows[0]


def _meter_row(loss_sum, correct, scored, count, last_loss, last_correct, last_scored, first_bad, grad_norm_max,
               tracks_grad_norm) -> dict:
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(scored, 1), "steps": int(count),
            "last_loss": last_loss, "last_accuracy": last_correct / max(last_scored, 1),
            "first_bad_step": int(first_bad), "grad_norm_max": grad_norm_max if tracks_grad_norm else None}


def max_grad_norm(a: float | None, b: float | None) -> float | None:
    """The larger of two window maxima of the gradient norm, None where neither window had one, NaN kept."""
    if a is None or b is None:
        return b if a is None else a
    return a if math.isnan(a) or a >= b else b


def make_optimizer(model, cfg: TrainerConfig, device: torch.device, device_schedule: bool) -> torch.optim.AdamW:
    groups = model.param_groups(cfg.weight_decay, cfg.ssm_lr)
    if not device_schedule:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")
    # Fused AdamW reading its learning rate from a device tensor that the step itself updates; capturable on CUDA.
    for g in groups:
        g["lr"] = torch.tensor(g.get("lr", cfg.lr), device=device, dtype=torch.float32)
    return torch.optim.AdamW(groups, lr=torch.tensor(cfg.lr, device=device), betas=tuple(cfg.betas), fused=True,
                             capturable=device.type == "cuda")


def first_error(e: BaseException) -> str:
    """The error that broke a capture, with where it came from: capture_end's own complaint ("operation failed
    due to a previous error during capture") hides it in the exception's context."""
    while e.__context__ is not None:
        e = e.__context__
    where = ""
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "ssmbench" in f.filename or "/models/" in f.filename or "/kernels/" in f.filename]
    if ours or tb:
        f = (ours or tb)[-1]
        where = f" (at {Path(f.filename).name}:{f.lineno}: {f.line})"
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}{where}"


IMPLEMENTATION_KEYS = ("lr", "capturable", "fused", "foreach", "differentiable")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """Load an AdamW state written by either step mode into `opt`, keeping `opt`'s own implementation (eager
    foreach/for-loop with float learning rates, or fused capturable with device lr tensors): loading would
    otherwise copy the writer's `capturable`/`fused` flags and lr type into the groups."""
    kept = [{k: g[k] for k in IMPLEMENTATION_KEYS if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for g, impl in zip(opt.param_groups, kept):
        g.update(impl)
        on_device = g.get("capturable") or g.get("fused")
        for p in g["params"]:
            st = opt.state.get(p, {})
            if "step" in st:
                st["step"] = st["step"].to(p.device if on_device else "cpu", torch.float32)


class TrainStep:
    """Runs steps of one model; `__call__(batch)` does one. Owns the optimizer and the schedule."""

    def __init__(self, model, task, cfg: TrainerConfig, device: torch.device, precision: str, mode: str,
                 device_schedule: bool | None = None):
        self.model, self.task, self.cfg, self.device = model, task, cfg, device
        self.mode = resolve_step_mode(mode, device)
        self.reason = ""
        # With graphs the schedule lives on the device (a table of lr factors indexed by a device step counter),
        # so a replayed step updates its own learning rate; eager keeps torch's LambdaLR on host floats.
        # (`device_schedule=True` runs the graphs' arithmetic eagerly: how the CPU tests check it.)
        self.device_schedule = self.mode == "graphs" if device_schedule is None else device_schedule
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.opt = make_optimizer(model, cfg, device, self.device_schedule)
        self.meters = Meters(device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if self.device_schedule:
            self.base_lrs = [float(g["lr"]) for g in self.opt.param_groups]
            self.lr_table = torch.tensor([lr_factor(cfg, s) for s in range(cfg.steps + 1)], device=device)
            self.sched = None
        else:
            self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.step_t = torch.zeros((), device=device, dtype=torch.int64)  # steps done, on the device
        self.graph = None
        self.static_inputs = self.static_targets = None
        self.eager_steps_before_capture = 3  # also warms up Triton's compile caches and cuBLAS handles
        self.compile = getattr(cfg, "compile", "none")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"trainer.compile={self.compile!r} is not one of {COMPILE_MODES}")
        # dynamic=False: training sees one shape; a new one (none expected) recompiles rather than going slow
        self._compiled = (None if self.compile == "none" else
                          torch.compile(self._forward_loss_eager, mode=self.compile, dynamic=False))

    # ---- state for checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None}

    def load_state_dict(self, state: dict, step: int) -> None:
        """Restore the optimizer (and schedule) of a run that has done `step` steps."""
        if self.graph is not None:
            raise RuntimeError("load the checkpoint before the first step: the captured graph holds the old state")
        load_optimizer_state(self.opt, state["optimizer"])
        if self.sched is not None:
            if state.get("scheduler") is not None:
                self.sched.load_state_dict(state["scheduler"])
            else:  # written with the device schedule: the same function of the step
                self.sched.last_epoch, self.sched._step_count = step, step + 1
            # The learning rate the next step uses (the loaded groups kept this optimizer's initial one).
            for g, base in zip(self.opt.param_groups, self.sched.base_lrs):
                g["lr"] = base * lr_factor(self.cfg, step)
        self.step_t.fill_(step)

    # ---- the step ------------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        # Under graph capture autocast must not cache casted weights across steps (they would go stale).
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=not self.device_schedule)

    def _forward_loss_eager(self, inputs: torch.Tensor, targets: torch.Tensor):
        with self._autocast():
            logits = self.model(inputs)
        return loss_and_accuracy(logits, targets)

    def _compiled_forward_loss(self, inputs: torch.Tensor, targets: torch.Tensor):
        """The forward and loss, compiled where asked; a compile that fails leaves the step uncompiled, with the
        reason kept (nothing has been changed yet when it fails: the backward and the update come after)."""
        if self._compiled is None:
            return self._forward_loss_eager(inputs, targets)
        try:
            return self._compiled(inputs, targets)
        except Exception as e:
            capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
            if self.graph is not None or capturing:
                raise  # a compiled step that worked before: not a compile problem
            self.reason = f"torch.compile(mode={self.compile!r}) failed, trained uncompiled: {first_error(e)}"
            self.compile, self._compiled = "none", None
            return self._forward_loss_eager(inputs, targets)

    def _body(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.device_schedule:
            # index_select, not lr_table[step_t]: indexing by a 0-d tensor reads it on the host (a sync).
            factor = self.lr_table.index_select(0, self.step_t.clamp(max=self.lr_table.numel() - 1).view(1))
            for g, base in zip(self.opt.param_groups, self.base_lrs):
                g["lr"].copy_(factor[0] * base)
        loss, correct, scored = self._compiled_forward_loss(inputs, targets)
        # Captured gradients must stay at fixed addresses: zeroed in place, not freed.
        self.opt.zero_grad(set_to_none=self.mode != "graphs")
        loss.backward()
        norm = None
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip,
                                                  foreach=self.device.type == "cuda")
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        self.meters.add(loss, correct, scored, self.step_t, norm)
        self.step_t.add_(1)

    def __call__(self, batch) -> None:
        # Steps of runs in threads of one process run side by side; a capture waits for them and goes alone
        # (gpu_turns says why).
        if self.mode != "graphs":
            with GPU_TURNS.shared():
                return self._body(batch.inputs, batch.targets)
        if self.graph is not None:
            with GPU_TURNS.shared():
                self.static_inputs.copy_(batch.inputs)
                self.static_targets.copy_(batch.targets)
                self.graph.replay()
            return None
        if self.eager_steps_before_capture > 0:  # real steps, run on a side stream as capture requires
            self.eager_steps_before_capture -= 1
            with GPU_TURNS.shared():
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._body(batch.inputs, batch.targets)
                torch.cuda.current_stream(self.device).wait_stream(side)
            return None
        with GPU_TURNS.exclusive():
            return self._capture(batch)

    def _capture(self, batch) -> None:
        self.static_inputs, self.static_targets = batch.inputs.clone(), batch.targets.clone()
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        try:
            # Several runs may train in one process, one thread each (ssmbench.multirun): a capture runs alone
            # (the caller holds GPU_TURNS.exclusive()), on its own stream (torch.cuda.graph's default capture
            # stream is shared by every caller), and in "thread_local" mode, so that other threads' work during a
            # capture is not taken for part of it.
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device), capture_error_mode="thread_local"):
                self._body(self.static_inputs, self.static_targets)
        except Exception as e:  # a layer that cannot be captured: record why and go on eagerly
            torch.cuda.synchronize(self.device)
            self.reason = f"CUDA graph capture failed, trained eagerly: {first_error(e)}"
            self.mode = "eager"
            self.static_inputs = self.static_targets = None
            return self._body(batch.inputs, batch.targets)
        self.graph = graph
        graph.replay()  # capture records the step without running it
        return None
