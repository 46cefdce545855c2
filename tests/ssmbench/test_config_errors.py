"""A bad config fails fast, names the key, exits non-zero, and leaves no row behind."""

import time

import pytest

from .helpers import cli


@pytest.mark.parametrize("override, needle", [
    ("task.seq_len=-5", "task.seq_len"),
    ("task.seq_len=10", "task.seq_len"),  # too short for the default 8 data tokens
    ("task.vocab_size=2", "task.vocab_size"),
    ("task.seq_lenn=5", "task.seq_lenn"),  # typo: Hydra rejects the key
    ("trainer.lr=fast", "trainer.lr"),  # wrong type
    ("trainer.steps=0", "trainer.steps"),
    ("trainer.schedule=linear", "trainer.schedule"),
    ("model.arch=foo", "model.arch"),
    ("model.layer.name=s5", "model.layer.name"),
    ("+model.layer.d_stat=3", "model.layer.d_stat"),
    ("model.d_model=-1", "model.d_model"),
])
def test_bad_config_exits_naming_key(tmp_path, override, needle):
    t0 = time.time()
    res = cli([override, f"results_root={tmp_path}", "trainer.steps=1" if "steps" not in override else "seed=0"],
              cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert needle in res.stderr + res.stdout
    assert time.time() - t0 < 60
    assert not list(tmp_path.rglob("*.json")), "a failed config must leave no row"


def test_heads_must_divide_d_model(tmp_path):
    res = cli(["model=transformer", "model.layer.n_heads=5", f"results_root={tmp_path}"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "model.layer.n_heads" in res.stderr and "d_model" in res.stderr
