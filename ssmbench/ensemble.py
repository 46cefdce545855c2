"""Several runs of one architecture trained in one process as a batched ensemble: one launch serves k runs.

A training step of the small models here is bound by the host (or by kernel launches), not by arithmetic, so k
runs stepped one after another cost about k times one step. Here the k members' parameters are stacked
([k, ...] per parameter, torch.func.stack_module_state) and the forward is torch.func.vmap over the member
dimension of one functional call of the model: every op runs once, on k times the data. Each member keeps what
makes it its own run:

- its seed (the member was built from it, as ssmbench.run builds a solo run's model) and its data stream (the
  caller samples its batch from the member's own generator; `sample` stacks them);
- its loss, accuracy and first non-finite step (ssmbench.step.Meters with one value per member);
- its gradient: the backward of the sum of the members' losses gives each member the gradient of its own loss
  (they share no parameter), clipped by that member's own norm, not a norm over the ensemble;
- its optimizer state: AdamW is element-wise, so one AdamW over the stacked parameters, with the solo run's
  groups and hyper-parameters (ssmbench.step.make_optimizer), is k AdamWs side by side.

So a member trains as the same run alone would (tests/ssmbench/test_ensemble.py checks the losses and the
weights against solo TrainSteps), and `member_state` / `load_member_state` move a member's checkpoint to and from
a solo run's format. The members share one step count and one learning-rate schedule (one AdamW `step` per
stacked parameter). The step runs eagerly: no CUDA graph yet.

The fused Triton scan and causal conv (the Mamba path on a GPU) batch too: their autograd Functions' vmap rules
fold the members into channels, so one launch serves all k (kernels/selective_scan/triton_scan.py). A layer whose
ops torch.func.vmap cannot batch (the LSTM/GRU/Elman layers: aten::lstm and friends have no batching rule and no
fallback) is refused when the ensemble is built, naming the layer and the reason.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import ExitStack, nullcontext
from typing import Any, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.overrides import TorchFunctionMode

from .config import TrainerConfig
from .gpu_turns import GPU_TURNS
from .metrics import loss_and_accuracy
from .step import Meters, lr_factor, make_optimizer

# AdamW's per-parameter state entries that hold one value per element (sliced per member); "step" is a count
# shared by every member.
PER_ELEMENT_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
# Optimizer-group settings every member must share to be stepped by one AdamW.
SHARED_GROUP_KEYS = ("weight_decay", "betas", "eps", "amsgrad", "maximize", "initial_lr", "name")


class _ConvAutocastUnderVmap(TorchFunctionMode):
    """Autocast's cast of a convolution's arguments, which vmap loses: a conv whose weight is batched (one per
    member) runs through vmap's batching rule, which autocast does not see, so a bf16 activation met an fp32
    weight and bias ("Input type (c10::BFloat16) and bias type (float) should be the same"; the Mamba block's
    depthwise conv). Casts input, weight and bias to the autocast dtype, as autocast does for a solo run."""

    CONVS = (torch.conv1d, torch.conv2d, torch.conv3d)

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.CONVS and torch.is_autocast_enabled(self.device_type):
            dtype = torch.get_autocast_dtype(self.device_type)
            cast = lambda a: a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a  # noqa: E731
            args, kwargs = [cast(a) for a in args], {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_differences(a: dict, b: dict) -> list[str]:
    """'key: a vs b' for every leaf where two nested dicts differ."""
    fa, fb = _flat(a), _flat(b)
    return [f"{k}: {fa.get(k, '<absent>')!r} vs {fb.get(k, '<absent>')!r}" for k in sorted(set(fa) | set(fb))
            if fa.get(k, "<absent>") != fb.get(k, "<absent>")]


def check_same_config(identities: Sequence[dict], ignore: tuple[str, ...] = ("seed",)) -> None:
    """ValueError naming the keys unless every identity (ssmbench.run.Prepared.identity) equals the first one in
    everything but `ignore`."""
    first = {k: v for k, v in identities[0].items() if k not in ignore}
    for i, ident in enumerate(identities[1:], start=1):
        diff = config_differences(first, {k: v for k, v in ident.items() if k not in ignore})
        if diff:
            raise ValueError(f"ensemble members must differ only in the seed, but member {i} differs from member 0 "
                             f"in {'; '.join(diff)}")


def _module_stack_hooks(module: torch.nn.Module, stack: list[str]):
    """Hooks that keep `stack` holding the names of the modules whose forward is running (innermost last), so
    that an error raised inside the forward can be pinned on a layer."""
    def enter(label):
        def hook(*_):
            stack.append(label)
        return hook

    def leave(*_):  # returns None: a forward hook's return value would replace the module's output
        stack.pop()

    handles = []
    for name, m in module.named_modules():
        handles.append(m.register_forward_pre_hook(enter(f"{name or '<model>'} ({type(m).__name__})")))
        handles.append(m.register_forward_hook(leave))
    return handles


class EnsembleStep:
    """Steps k members of one architecture at once; `__call__(batch)` with inputs/targets [k, batch, L] does one.

    `models`: k LanguageModels of one config (each built from its own seed, e.g. by `build_members`), already on
    `device`. Their parameters are copied into the stacked ones; the modules themselves are not used afterwards
    (`member_state(i)` gives member i's weights)."""

    def __init__(self, models: Sequence[torch.nn.Module], task, cfg: TrainerConfig, device: torch.device,
                 precision: str):
        models = list(models)
        if len(models) < 1:
            raise ValueError(f"an ensemble needs k >= 1 members, got k={len(models)}")
        self._check_same_model(models)
        self.k, self.task, self.cfg, self.device = len(models), task, cfg, device
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        first = models[0]
        params, buffers = stack_module_state(models)
        self.params = {n: p.to(device).detach().requires_grad_(p.requires_grad) for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in buffers.items()}
        # state_dict key -> stacked name: a tied weight is one stacked parameter under two state_dict keys
        stacked_name = {id(t): n for n, t in (*first.named_parameters(), *first.named_buffers())}
        self.state_keys = {key: stacked_name[id(t)] for key, t in first.state_dict(keep_vars=True).items()}
        # The architecture without weights: every call swaps the stacked ones in.
        self.base = copy.deepcopy(first).to("meta")
        self.family = getattr(getattr(first, "cfg", None), "name", type(first).__name__)
        self._check_vmappable(task)

        # The solo run's groups (ssmbench.step.make_optimizer), each parameter replaced by its stack.
        name_of = {id(p): n for n, p in first.named_parameters()}
        groups = [{**g, "params": [self.params[name_of[id(p)]] for p in g["params"]]}
                  for g in first.param_groups(cfg.weight_decay, cfg.ssm_lr)]
        self.opt = make_optimizer(_Groups(groups), cfg, device, device_schedule=False)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(cfg, s))
        self.trainable = [p for g in self.opt.param_groups for p in g["params"]]
        self.meters = Meters(device, members=self.k)  # read() gives one dict per member
        self.step_t = torch.zeros((), device=device, dtype=torch.int64)
        self.member_steps = [0] * self.k  # steps each member has done (load_member_state may set one)
        self._forward = vmap(self._member_logits, randomness="different")
        self._loss = vmap(loss_and_accuracy)

    # ---- construction checks -----------------------------------------------------------------------------------
    @staticmethod
    def _check_same_model(models: list) -> None:
        cfgs = [getattr(m, "cfg", None) for m in models]
        for i, c in enumerate(cfgs[1:], start=1):
            if c is not None and cfgs[0] is not None and c != cfgs[0]:
                diff = config_differences(dataclasses.asdict(cfgs[0]), dataclasses.asdict(c))
                raise ValueError(f"ensemble members must share one model config, but member {i} differs from "
                                 f"member 0 in model.{'; model.'.join(diff)}")
        shapes = [{k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()} for m in models]
        for i, s in enumerate(shapes[1:], start=1):
            if s != shapes[0]:
                diff = sorted(k for k in set(s) | set(shapes[0]) if s.get(k) != shapes[0].get(k))
                raise ValueError(f"ensemble members must have the same parameters, but member {i} differs from "
                                 f"member 0 in {', '.join(diff)} (a different vocabulary or model config?)")

    def _check_vmappable(self, task) -> None:
        """Before any training, one forward and backward of every member under vmap, on one sequence of the task:
        a layer that vmap cannot batch fails here, named, rather than at the first step; and member 0's logits and
        gradients must match the same member run alone (finite, and equal within the precision's rounding), so a
        batching rule that runs but computes something else (a fused attention kernel on one device, say) is
        refused here instead of showing up as a run that diverges."""
        inputs = self._probe_inputs(task)
        stack: list[str] = []
        handles = _module_stack_hooks(self.base, stack)
        try:
            with self._autocast():
                logits = vmap(self._member_logits, randomness="different")(self.params, self.buffers, inputs)
        except Exception as e:
            where = stack[-1] if stack else "the model"
            raise ValueError(f"model {self.family!r} cannot be trained as a batched ensemble: layer {where} fails "
                             f"under torch.func.vmap: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        finally:
            for h in handles:
                h.remove()
        names = [n for n, p in self.params.items() if p.requires_grad]
        try:
            grads = torch.autograd.grad(logits[0].float().sum(), [self.params[n] for n in names], allow_unused=True)
        except Exception as e:
            raise ValueError(f"model {self.family!r} cannot be trained as a batched ensemble: its backward fails "
                             f"under torch.func.vmap: {type(e).__name__}: {str(e).splitlines()[0]}") from e
        own = {n: p[0].detach().requires_grad_(p.requires_grad) for n, p in self.params.items()}
        with self._autocast():
            alone = self._member_logits(own, {n: b[0] for n, b in self.buffers.items()}, inputs[0])
        alone_grads = torch.autograd.grad(alone.float().sum(), [own[n] for n in names], allow_unused=True)
        checks = [("logits", logits[0].detach(), alone.detach())]
        checks += [(f"the gradient of {n}", g[0], a) for n, g, a in zip(names, grads, alone_grads)
                   if g is not None and a is not None]
        rtol = 5e-2 if self.dtype is not None else 1e-3  # bf16 rounds to ~3 significant digits
        for what, batched, solo in checks:
            batched, solo = batched.float(), solo.float()
            finite = bool(torch.isfinite(batched).all())
            err = float((batched - solo).norm()) if finite else float("nan")
            scale = float(solo.norm())
            if not finite or err > rtol * scale + 1e-6:
                raise ValueError(
                    f"model {self.family!r} cannot be trained as a batched ensemble on {self.device.type}: under "
                    f"torch.func.vmap member 0's {what} " + ("is not finite" if not finite else
                    f"differs from the member run alone by {err / max(scale, 1e-30):.2g} (relative norm; "
                    f"allowed {rtol:g})") + "; train these runs as separate processes instead")

    def _probe_inputs(self, task) -> torch.Tensor:
        """[k, 1, L] copies of one sequence of the task (the training length: some kernels choose their path by
        length), from a fixed generator so that the check is the same every time."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        try:
            one = task.sample(1, None, gen).inputs
        except Exception:  # a task whose sampler wants its own device's generator: a short run of token 0
            one = torch.zeros(1, max(1, min(8, getattr(task, "seq_len", 8))), dtype=torch.long)
        return one.to(self.device).expand(self.k, *one.shape).contiguous()

    # ---- the step ----------------------------------------------------------------------------------------------
    def _member_logits(self, params, buffers, inputs):
        return functional_call(self.base, (params, buffers), (inputs,))

    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        stack = ExitStack()
        stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.dtype))
        stack.enter_context(_ConvAutocastUnderVmap(self.device.type))
        return stack

    def sample(self, generators: Sequence[torch.Generator], batch_size: int | None = None):
        """Each member's batch from its own generator, stacked: a Batch of [k, batch, L] tensors."""
        if len(generators) != self.k:
            raise ValueError(f"one generator per member: got {len(generators)} for k={self.k}")
        batch_size = batch_size or self.cfg.batch_size
        batches = [self.task.sample(batch_size, None, g) for g in generators]
        return type(batches[0])(torch.stack([b.inputs for b in batches]), torch.stack([b.targets for b in batches]))

    def clip_per_member(self) -> torch.Tensor | None:
        """clip_grad_norm_ for each member on its own: the norm over member i's slice of every gradient. Returns
        the members' norms before clipping [k] (None without gradients)."""
        grads = [p.grad for p in self.trainable if p.grad is not None]
        if not grads:
            return None
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(self.k, -1), 2, dim=1) for g in grads])
        total = torch.linalg.vector_norm(norms, 2, dim=0)  # [k]
        coef = (self.cfg.grad_clip / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(self.k, *([1] * (g.dim() - 1))).to(g.dtype))
        return total

    def __call__(self, batch) -> torch.Tensor:
        """One step of every member on `batch` (inputs, targets [k, batch, L]); returns the members' losses [k]
        (on the device, detached)."""
        if batch.inputs.dim() != 3 or batch.inputs.shape[0] != self.k:
            raise ValueError(f"an ensemble step takes inputs [k={self.k}, batch, L], got {list(batch.inputs.shape)}")
        if len(set(self.member_steps)) > 1:
            raise RuntimeError(f"members are at different steps {self.member_steps}: they share one schedule and "
                               "one AdamW step count; load every member's state from the same step")
        with self._autocast():
            logits = self._forward(self.params, self.buffers, batch.inputs)
        loss, correct, scored = self._loss(logits, batch.targets)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # members share no parameter: each slice gets its own member's gradient
        norms = self.clip_per_member() if self.cfg.grad_clip > 0 else None
        self.opt.step()
        self.sched.step()
        self.meters.add(loss, correct, scored, self.step_t, norms)
        self.step_t.add_(1)
        self.member_steps = [s + 1 for s in self.member_steps]
        return loss.detach()

    # ---- members' states, in the solo run's formats --------------------------------------------------------------
    def member_model_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as a LanguageModel.state_dict() (copies)."""
        self._check_member(i)
        stacked = {**self.params, **self.buffers}
        return {key: stacked[name][i].detach().clone() for key, name in self.state_keys.items()}

    def member_state(self, i: int) -> dict:
        """{"model": member i's LanguageModel state_dict, "train_step": its optimizer and schedule as
        TrainStep.state_dict() gives them}: the keys a solo run's checkpoint holds them under
        (ssmbench.train._checkpoint), so a member continues as a solo run and back."""
        self._check_member(i)
        full = self.opt.state_dict()
        state = {}
        for idx, st in full["state"].items():
            state[idx] = {key: (v[i].clone() if key in PER_ELEMENT_STATE else v.clone()) if torch.is_tensor(v) else v
                          for key, v in st.items()}
        opt_state = {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}
        return {"model": self.member_model_state(i),
                "train_step": {"optimizer": opt_state, "scheduler": copy.deepcopy(self.sched.state_dict())}}

    def load_member_state(self, i: int, state: dict, step: int) -> None:
        """The reverse of member_state(i): member i takes the weights and optimizer state of a run (a solo run's
        checkpoint, or another member's) that has done `step` steps. The members share one schedule and one AdamW
        step count, so the ensemble's step becomes `step`; every member must be at that step before the next
        ensemble step (RuntimeError otherwise)."""
        self._check_member(i)
        model_state, opt_state = state["model"], state["train_step"]["optimizer"]
        missing = sorted(set(self.state_keys) - set(model_state))
        unexpected = sorted(set(model_state) - set(self.state_keys))
        if missing or unexpected:
            raise ValueError(f"member state does not fit this ensemble's model: missing {missing}, unexpected "
                             f"{unexpected}")
        stacked = {**self.params, **self.buffers}
        with torch.no_grad():
            for key, name in self.state_keys.items():
                target, value = stacked[name][i], model_state[key]
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"member state's {key} has shape {list(value.shape)}, the ensemble's member "
                                     f"{list(target.shape)}")
                target.copy_(value)
        self._load_member_optimizer(i, opt_state, step)
        self.member_steps[i] = step
        self.sched.last_epoch, self.sched._step_count = step, step + 1
        for g, base in zip(self.opt.param_groups, self.sched.base_lrs):
            g["lr"] = base * lr_factor(self.cfg, step)
        self.step_t.fill_(step)

    def _load_member_optimizer(self, i: int, opt_state: dict, step: int) -> None:
        groups = opt_state["param_groups"]
        if len(groups) != len(self.opt.param_groups):
            raise ValueError(f"member optimizer state has {len(groups)} parameter groups, the ensemble "
                             f"{len(self.opt.param_groups)}")
        for theirs, ours in zip(groups, self.opt.param_groups):
            if len(theirs["params"]) != len(ours["params"]):
                raise ValueError(f"member optimizer group {ours.get('name')!r} has {len(theirs['params'])} "
                                 f"parameters, the ensemble's {len(ours['params'])}")
            for key in SHARED_GROUP_KEYS:
                if key in theirs and key in ours:
                    a, b = theirs[key], ours[key]
                    if (tuple(a) if isinstance(a, (list, tuple)) else a) != (tuple(b) if isinstance(b, (list, tuple))
                                                                              else b):
                        raise ValueError(f"member optimizer group {ours.get('name')!r} has {key}={a!r}, the "
                                         f"ensemble's {b!r}: members share one AdamW's settings")
        on_device = any(g.get("fused") or g.get("capturable") for g in self.opt.param_groups)
        for g_theirs, g_ours in zip(groups, self.opt.param_groups):
            for idx, p in zip(g_theirs["params"], g_ours["params"]):
                saved = opt_state["state"].get(idx)
                st = self.opt.state[p]
                if not st:  # this stacked parameter has not been stepped yet: AdamW's initial state
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                with torch.no_grad():
                    for key in PER_ELEMENT_STATE:
                        if key in st:
                            st[key][i].copy_(saved[key] if saved is not None and key in saved else 0)
                st["step"].fill_(float(step))

    def _check_member(self, i: int) -> None:
        if not 0 <= i < self.k:
            raise IndexError(f"member {i} of an ensemble of k={self.k}")


class _Groups:
    """What make_optimizer reads from a model: its parameter groups (here, over the stacked parameters)."""

    def __init__(self, groups: list[dict]):
        self.groups = groups

    def param_groups(self, weight_decay: float, ssm_lr: float | None = None) -> list[dict]:
        return self.groups


def build_members(preps: Sequence) -> list[torch.nn.Module]:
    """The k members' models from k prepared runs (ssmbench.run.prepare) that differ only in their seed, each
    built as ssmbench.run.execute builds a solo run's: torch.manual_seed(seed), then LanguageModel. ValueError
    naming the keys when the runs differ in anything else."""
    from ssmbench.models.lm import LanguageModel

    preps = list(preps)
    if len(preps) < 1:
        raise ValueError(f"an ensemble needs k >= 1 members, got k={len(preps)}")
    check_same_config([{**p.identity, "precision": p.precision} for p in preps])
    models = []
    for p in preps:
        with GPU_TURNS.exclusive():  # the global generator is the process's (as in ssmbench.run.execute)
            torch.manual_seed(p.cfg.seed)  # parameter init only, as a solo run
            model = LanguageModel(p.model_cfg, p.task.vocab_size)
        models.append(model.to(p.device))
    return models
