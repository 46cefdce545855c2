"""Shared by the runner tests: compose configs in-process, and run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ssmbench.config import compose_config

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
