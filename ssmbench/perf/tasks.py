"""Are the task generators ever the bottleneck? For each reproduction experiment (conf/experiment/*.yaml) and each
model it trains, the time to generate one training batch against the time of one training step, on the
experiment's own device, precision and sizes. The claim checked: generating costs well under `threshold` (5%)
of a step at every configuration.

    rows = run_taskbench(TaskBenchConfig(...))        # what `ssmbench-taskbench` runs (ssmbench/perf/cli.py)

The config of each point is composed exactly as `ssmbench experiment=<name> model=<model>` would compose it
(plus the overrides given here), and validated by the same code (ssmbench.run.prepare). The training step is the
loop's: forward under the run's autocast, loss on the scored positions, backward, gradient clipping, AdamW step,
and the loss read back (the loop's one sync a step); its batch is drawn once beforehand. The generator call is
task.sample(batch_size, None, generator) with the loop's device-side generator. Both are timed with the device
synchronised at each edge; medians over `repeats` calls after `warmup` calls.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ssmbench.env import environment
from ssmbench.results import rows_path, run_id, write_rows

from .timing import Budget, summarize, wall_ms

log = logging.getLogger("ssmbench.taskbench")


@dataclass
class ExperimentBench:
    models: list[str] = field(default_factory=list)  # conf/model names; empty: the experiment's own model
    overrides: list[str] = field(default_factory=list)  # for every model of this experiment
    model_overrides: dict[str, list[str]] = field(default_factory=dict)  # model name -> its own overrides


def _default_experiments() -> dict[str, ExperimentBench]:
    return {
        "table1": ExperimentBench(models=["s4", "s6_nogate", "h3", "hyena", "s6_h3", "mamba_s4", "mamba_hyena",
                                          "mamba"]),
        # Table 11: Mamba at d_model 64; the attention models at d_model 128 with 8 heads (conf/experiment/induction)
        "induction": ExperimentBench(models=["mamba", "transformer", "transformer_abs", "transformer_xpos"],
                                     model_overrides={m: ["model.d_model=128", "model.layer.n_heads=8"]
                                                      for m in ("transformer", "transformer_abs", "transformer_xpos")}),
        "demo": ExperimentBench(models=["transformer", "lstm", "s4", "h3", "hyena", "mamba"]),
    }


@dataclass
class TaskBenchConfig:
    study: str = "generators"
    results_root: str = "results"
    experiments: dict[str, ExperimentBench] = field(default_factory=_default_experiments)
    overrides: list[str] = field(default_factory=list)  # applied to every point last (e.g. smaller sizes on a CPU)
    device: Optional[str] = None  # None: each experiment's own `device` (demo pins cpu; the others auto)
    warmup: int = 2
    repeats: int = 10
    threshold: float = 0.05  # generator time / step time must stay below this
    budget_s: Optional[float] = None
    report: bool = True


def compose_run_config(overrides: list[str]):
    """The main app's config (conf/config.yaml) with these overrides, as `ssmbench <overrides>` composes it.
    Works inside a running Hydra app (the profile CLI) and outside one (tests)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ssmbench.config import register_configs
    register_configs()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_module(config_module="ssmbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _median_ms(fn, device, warmup, repeats) -> tuple[float, float, float]:
    t = summarize(wall_ms(fn, device, warmup=warmup, repeats=repeats))
    return t.median_ms, t.p20_ms, t.p80_ms


def measure_point(overrides: list[str], warmup: int, repeats: int) -> dict:
    """Generator and training-step time for one composed config; the row fields."""
    from ssmbench.evaluate import autocast_factory
    from ssmbench.metrics import loss_and_accuracy
    from ssmbench.models.lm import LanguageModel
    from ssmbench.run import prepare

    cfg = compose_run_config(overrides)
    p = prepare(cfg)
    device, bs = p.device, p.trainer.batch_size
    fields = {"task": cfg.task.name, "seq_len": p.task.seq_len, "batch_size": bs, "model": p.model_cfg.name,
              "arch": p.model_cfg.arch, "layer": p.model_cfg.layer.get("name"), "d_model": p.model_cfg.d_model,
              "n_layers": p.model_cfg.n_layers, "precision": p.precision, **environment(device)}
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = LanguageModel(p.model_cfg, p.task.vocab_size).to(device).train()
    opt = torch.optim.AdamW(model.param_groups(p.trainer.weight_decay, p.trainer.ssm_lr), lr=p.trainer.lr,
                            betas=tuple(p.trainer.betas), fused=device.type == "cuda")
    autocast = autocast_factory(device, p.precision)
    batch = p.task.sample(bs, None, gen)

    def sample():
        p.task.sample(bs, None, gen)

    def train_step():
        with autocast():
            logits = model(batch.inputs)
        loss, _, _ = loss_and_accuracy(logits, batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if p.trainer.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.trainer.grad_clip)
        opt.step()
        float(loss.detach())

    gen_ms, gen_p20, gen_p80 = _median_ms(sample, device, warmup, repeats)
    step_ms, step_p20, step_p80 = _median_ms(train_step, device, warmup, repeats)
    return {**fields, "params": model.num_parameters(), "gen_ms": gen_ms, "gen_p20_ms": gen_p20,
            "gen_p80_ms": gen_p80, "step_ms": step_ms, "step_p20_ms": step_p20, "step_p80_ms": step_p80,
            "gen_fraction": gen_ms / step_ms}


def run_taskbench(cfg: TaskBenchConfig) -> list[dict]:
    from ssmbench.metrics import free_cached_memory, is_out_of_memory
    clock = Budget(cfg.budget_s)
    all_rows = []
    for exp, spec in cfg.experiments.items():
        for model in spec.models or [None]:
            over = [f"experiment={exp}"] + ([f"model={model}"] if model else []) + list(spec.overrides) \
                + list(spec.model_overrides.get(model, [])) + list(cfg.overrides) \
                + ([f"device={cfg.device}"] if cfg.device else [])
            rid = run_id({"kind": "taskgen", "overrides": over})
            row = {"kind": "taskgen", "study": cfg.study, "run_id": rid, "experiment": exp, "model": model or "",
                   "overrides": " ".join(over), "threshold": cfg.threshold, "status": "ok", "error": "",
                   "timestamp": time.strftime("%Y-%m-%d %H:%M:%S")}
            if clock.over():
                row.update(status="skipped", error=f"time budget of {cfg.budget_s} s spent", gen_fraction=math.nan)
            else:
                try:
                    row.update(measure_point(over, cfg.warmup, cfg.repeats))
                    row["under_threshold"] = bool(row["gen_fraction"] < cfg.threshold)
                except Exception as e:
                    oom = is_out_of_memory(e)
                    row.update(status="oom" if oom else "error", gen_fraction=math.nan,
                               error=f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"[:500])
                    free_cached_memory(torch.device("cuda")) if torch.cuda.is_available() else None
            write_rows(rows_path(cfg.results_root, cfg.study, rid), [row])
            all_rows.append(row)
            if row["status"] == "ok":
                log.info("%-10s %-16s L=%-5d B=%-3d generator %.3f ms, step %.2f ms: %.2f%% of a step", exp,
                         row["model"], row["seq_len"], row["batch_size"], row["gen_ms"], row["step_ms"],
                         100 * row["gen_fraction"])
            else:
                log.info("%-10s %-16s %s: %s", exp, row["model"], row["status"], row["error"])
    return all_rows
