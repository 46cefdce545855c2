"""Run ids of the studies in progress must not move: a run's checkpoint is found by its id, so a change that alters
the id of an existing config (a new config key, a renamed one) orphans every paused run of that config."""

import pytest

from ssmbench.results import run_id
from ssmbench.run import prepare

from .helpers import compose_cfg

ATTENTION = ["model.d_model=128", "model.layer.n_heads=8", "trainer.lr=2e-4"]
# results/induction/runs/<id>: the Table 11 runs being trained on the GPU across sessions (scripts/gpu_induction.sh)
IN_PROGRESS = {
    "23d82a22c51c3769": ["model=mamba"],
    "866734e90b6367f7": ["model=transformer_abs", *ATTENTION],
    "201d1b0cee686569": ["model=transformer", *ATTENTION],
    "c1ec914fcf3f9f37": ["model=transformer_xpos", *ATTENTION],
    "039526554cf98126": ["model=h3", "trainer.lr=2e-4"],
    "8fba4cc49f48bbf6": ["model=hyena", "trainer.lr=2e-4"],
}


@pytest.mark.parametrize("expected,overrides", IN_PROGRESS.items())
def test_run_ids_of_runs_in_progress_are_stable(expected, overrides):
    p = prepare(compose_cfg(["experiment=induction", *overrides, "device=cpu"]))
    identity = {**p.identity, "device": "cuda"}  # they run on the GPU
    assert run_id(identity) == expected, (
        "this change moves the run id of a paused study run: its checkpoint under results/induction/runs/"
        f"{expected} would no longer be found. Keep old ids (e.g. leave a new key out of the identity while it "
        "has its default) or move the run folders to their new ids and update this test.")
