"""Experiment tracking, as an option: `logger=none` (default), `tensorboard`, `wandb`, `mlflow`.

One place feeds it: the training loop's held-out checks (step, held-out accuracy and loss, training loss) and, at
the end, the run's rows and config. Each tracker writes under the run's folder (`runs/<run_id>/<logger>/`), so a
paused run that continues appends to the same log. wandb and mlflow run offline / to a local file store: no
network is needed. Their packages are extras (`pip install -e ".[tracking]"`); asking for one that is not
installed is a config error naming `logger`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

LOGGERS = ("none", "tensorboard", "wandb", "mlflow")
PACKAGE = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


class TrackingError(ValueError):
    pass


def check_logger(name: str) -> None:
    """Before any work: a known logger whose package is importable."""
    if name not in LOGGERS:
        raise TrackingError(f"logger={name!r} is not one of {LOGGERS}")
    if name != "none" and importlib.util.find_spec(PACKAGE[name]) is None:
        raise TrackingError(f"logger={name} needs the {PACKAGE[name]!r} package: pip install -e \".[tracking]\" "
                            f"(or pip install {PACKAGE[name]}), or logger=none")


class Tracker:
    """No tracking; the base the others extend."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def finish(self, rows: list[dict[str, Any]]) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, folder: Path, config_yaml: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.writer.add_text("config", "```\n" + config_yaml + "\n```", 0)

    def scalars(self, step, values):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, rows):
        for r in rows:
            if r.get("status") == "ok":
                self.writer.add_scalar("final/accuracy_by_length", r["accuracy"], int(r["eval_len"]))
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, folder: Path, config_yaml: str, run_id: str, name: str):
        import wandb
        import yaml

        self.wandb = wandb
        self.run = wandb.init(mode="offline", dir=str(folder), id=run_id, name=name, resume="allow",
                              config=yaml.safe_load(config_yaml))

    def scalars(self, step, values):
        self.run.log(values, step=step)

    def finish(self, rows):
        ok = [r for r in rows if r.get("status") == "ok"]
        self.run.summary.update({f"final/accuracy_L{r['eval_len']}": r["accuracy"] for r in ok})
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, folder: Path, config_yaml: str, name: str):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri((folder / "mlflow").resolve().as_uri())
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_text(config_yaml, "config.yaml")

    def scalars(self, step, values):
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def finish(self, rows):
        self.mlflow.log_text(json.dumps(rows, indent=1, default=str), "rows.json")
        self.mlflow.end_run()


def make_tracker(name: str, folder: Path, config_yaml: str, run_id: str, label: str) -> Tracker:
    check_logger(name)
    if name == "tensorboard":
        return TensorBoardTracker(folder, config_yaml)
    if name == "wandb":
        return WandbTracker(folder, config_yaml, run_id, label)
    if name == "mlflow":
        return MlflowTracker(folder, config_yaml, label)
    return Tracker()
