"""Shared by the runner tests: compose configs in-process, run the CLI in a subprocess, train a tiny model's steps,
and load a script of scripts/ as a module."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ssmbench.config import compose_config

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# A run that takes a second or two on the CPU.
TINY = ["task.seq_len=32", "task.n_data=4", "model.d_model=16", "model.n_layers=1", "trainer.steps=20",
        "trainer.batch_size=8", "trainer.check_every=10", "trainer.progress=false", "eval.batches=1",
        "eval.batch_size=8", "model.layer.d_state=4"]


# Models whose inner layer has no state size (attention, the RNNs, Hyena's implicit filter): model.layer.d_state
# would be an unknown key there.
NO_D_STATE = ("transformer", "lstm", "gru", "elman", "rnn", "hyena")


def tiny_overrides(model: str = "mamba") -> list[str]:
    stateless = any(name in model for name in NO_D_STATE)
    over = [o for o in TINY if not (o.startswith("model.layer.d_state") and stateless)]
    return [f"model={model}"] + over


def compose_cfg(overrides: list[str]):
    return compose_config(overrides)


def cli(args: list[str], cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmbench.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **popen)


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train_losses(model_name: str, mode: str, steps: int, extra=(), device: str = "cuda", norms: list | None = None):
    """A tiny model's first `steps` training losses (fp32, seeded) under step mode `mode`, and its TrainStep."""
    import torch

    from ssmbench.gpu_turns import GPU_TURNS
    from ssmbench.models.lm import LanguageModel
    from ssmbench.run import prepare
    from ssmbench.step import TrainStep

    p = prepare(compose_cfg(tiny_overrides(model_name) + [f"device={device}", "trainer.precision=fp32", *extra]))
    with GPU_TURNS.exclusive():  # the global generator is shared by threads (test_train_step's threads test)
        torch.manual_seed(0)
        model = LanguageModel(p.model_cfg, p.task.vocab_size)
    model = model.to(p.device)
    step = TrainStep(model, p.task, p.trainer, p.device, p.precision, mode)
    gen = torch.Generator(device=p.device).manual_seed(0)
    losses = []
    for _ in range(steps):
        step(p.task.sample(p.trainer.batch_size, None, gen))
        read = step.meters.read()
        losses.append(read["last_loss"])
        if norms is not None:  # each step's gradient norm before clipping
            norms.append(read["grad_norm_max"])
    return losses, step
