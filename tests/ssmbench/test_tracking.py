"""Experiment tracking: TensorBoard event files from one run, and a clear error for an unknown or missing logger."""

import importlib.util

import pytest

from ssmbench.run import RunConfigError, prepare

from .helpers import cli, compose_cfg, tiny_overrides


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed (dev extra)")
def test_tensorboard_logs_the_checks_and_the_final_accuracy(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = cli([*tiny_overrides("transformer"), "logger=tensorboard", f"results_root={tmp_path}", "study=tb",
               "eval.lengths=[16,32]"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (folder,) = list((tmp_path / "tb" / "runs").glob("*/tensorboard"))
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"heldout/accuracy", "heldout/loss", "train/loss", "train/grad_norm_max",
            "final/accuracy_by_length"} <= set(tags)
    assert [e.step for e in events.Scalars("heldout/accuracy")] == [10]  # trainer.check_every=10 of 20 steps
    assert sorted(e.step for e in events.Scalars("final/accuracy_by_length")) == [16, 32]


def test_unknown_logger_is_a_config_error():
    with pytest.raises(RunConfigError, match="logger='tensorbord' is not one of"):
        prepare(compose_cfg([*tiny_overrides("transformer"), "logger=tensorbord"]))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_logger_whose_package_is_missing_names_the_package():
    with pytest.raises(RunConfigError, match="logger=wandb needs the 'wandb' package"):
        prepare(compose_cfg([*tiny_overrides("transformer"), "logger=wandb"]))
