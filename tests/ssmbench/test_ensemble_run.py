"""ssmbench.ensemble_run: runs that differ only in their seed trained as one ensemble, each keeping what its solo
run would give it (run id, checkpoint, progress, rows)."""

import json
import math

import pytest
import torch

import ssmbench.ensemble_run as er
from ssmbench.checkpoint import CHECKPOINT, PROGRESS, run_dir
from ssmbench.cli import run_one
from ssmbench.results import rows_path, run_id
from ssmbench.run import check_seed_of, prepare
from ssmbench.train import STOP_ALL

from .helpers import compose_cfg, tiny_overrides

BASE = tiny_overrides("mamba") + ["device=cpu", "trainer.precision=fp32", "model.layer.scan_backend=torch",
                                  "study=ens"]
RUNS = [("a", [*BASE, "seed=0"]), ("b", [*BASE, "seed=1"])]
TRAIN_KEYS = ("steps", "stopped_early", "params", "history")
CLOSE_KEYS = ("accuracy", "loss", "final_train_loss", "final_train_accuracy")


def _rid(args, root):
    return run_id(prepare(compose_cfg([*args, f"results_root={root}"])).identity)


def _rows(root, rid):
    return json.loads(rows_path(root, "ens", rid).read_text())


def _solo(args, root, *extra):
    return run_one(compose_cfg([*args, f"results_root={root}", *extra]))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tiny runs are bound by overhead: one intra-op thread is several times faster on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def solo_rows(one_thread, tmp_path_factory):
    """The two runs trained by the solo command, uninterrupted: {name: rows}."""
    root = tmp_path_factory.mktemp("solo")
    return {name: _solo(args, root) for name, args in RUNS}


def _same_rows(ens: list[dict], solo: list[dict], tol: float = 1e-4):
    assert len(ens) == len(solo)
    for e, s in zip(ens, solo):
        assert set(e) == set(s) | {"ensemble_k", "ensemble_of"}, set(e) ^ set(s)
        assert e["run_id"] == s["run_id"] and e["eval_len"] == s["eval_len"]
        assert e["status"] == s["status"] == "ok"
        for key in TRAIN_KEYS:
            if key == "history":
                assert [h["step"] for h in e[key]] == [h["step"] for h in s[key]]
                for he, hs in zip(e[key], s[key]):
                    assert math.isclose(he["accuracy"], hs["accuracy"], abs_tol=tol)
                    assert math.isclose(he["loss"], hs["loss"], rel_tol=tol, abs_tol=tol)
                    # each member clipped by its own norm, which it meters as the run alone does
                    assert math.isclose(he["grad_norm_max"], hs["grad_norm_max"], rel_tol=tol, abs_tol=tol)
            else:
                assert e[key] == s[key], key
        for key in CLOSE_KEYS:
            assert math.isclose(e[key], s[key], rel_tol=tol, abs_tol=tol), (key, e[key], s[key])


def test_an_ensemble_makes_each_runs_solo_rows(tmp_path, solo_rows):
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}"]) == "done"
    ids = [_rid(args, tmp_path) for _, args in RUNS]
    for (name, _), rid in zip(RUNS, ids):
        rows = _rows(tmp_path, rid)
        _same_rows(rows, solo_rows[name])
        assert all(r["ensemble_k"] == 2 and r["ensemble_of"] == ids and r["step_mode"] == "ensemble" for r in rows)
        folder = run_dir(tmp_path, "ens", rid)
        assert not (folder / CHECKPOINT).exists()  # finished: as a solo run, only the rows stay
        assert json.loads((folder / PROGRESS).read_text())["status"] == "ok"
        assert (tmp_path / "ens" / "logs" / f"{name}.log").exists()
    # finished members are skipped, as the CLI skips them
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}"]) == "skipped"


def test_pause_then_resume_gives_the_uninterrupted_rows(tmp_path, solo_rows, monkeypatch):
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}", "trainer.max_time_s=0.000001"]) == "paused"
    for _, args in RUNS:
        rid = _rid(args, tmp_path)
        assert not rows_path(tmp_path, "ens", rid).exists()
        folder = run_dir(tmp_path, "ens", rid)
        progress = json.loads((folder / PROGRESS).read_text())
        assert progress["status"] == "paused" and progress["step"] == 1
        assert torch.load(folder / CHECKPOINT, weights_only=True)["step"] == 1
    # then SIGTERM's way (what multirun's and ensemble_run's handlers set), at the held-out check of step 10
    real = er.evaluate_length

    def stop_at_check(*args, **kw):
        STOP_ALL.set()
        return real(*args, **kw)

    monkeypatch.setattr(er, "evaluate_length", stop_at_check)
    try:
        assert er.run_ensemble(RUNS, [f"results_root={tmp_path}"]) == "paused"
    finally:
        STOP_ALL.clear()
    monkeypatch.setattr(er, "evaluate_length", real)
    for _, args in RUNS:
        progress = json.loads((run_dir(tmp_path, "ens", _rid(args, tmp_path)) / PROGRESS).read_text())
        assert progress["status"] == "paused" and progress["step"] == 10 and len(progress["history"]) == 1
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}"]) == "done"
    for name, args in RUNS:
        rows = _rows(tmp_path, _rid(args, tmp_path))
        _same_rows(rows, solo_rows[name])
        assert rows[0]["resumes"] == 2


def test_members_move_between_solo_and_ensemble(tmp_path, solo_rows):
    (_, a), (_, b) = RUNS
    # ensemble -> solo: a member paused by the ensemble continues with the solo command
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}", "trainer.max_time_s=0.000001"]) == "paused"
    _same_rows_solo = _solo(b, tmp_path)
    assert _same_rows_solo[0]["resumes"] == 1
    for e, s in zip(_same_rows_solo, solo_rows["b"]):
        for key in CLOSE_KEYS:
            assert math.isclose(e[key], s[key], rel_tol=1e-4, abs_tol=1e-4), key
    # a at step 1, b finished: b is skipped and a goes on alone, as an ensemble of one
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}"]) == "done"
    _same_rows(_rows(tmp_path, _rid(a, tmp_path)), solo_rows["a"])

    # solo -> ensemble: checkpoints at different steps are refused, naming the runs and their steps
    root = tmp_path / "back"
    assert _solo(a, root, "trainer.max_time_s=0.000001")[0]["status"] == "paused"
    with pytest.raises(er.EnsembleError, match=r"different steps: a \(\w+\) at step 1, b \(\w+\) at step 0"):
        er.run_ensemble(RUNS, [f"results_root={root}"])
    assert _solo(b, root, "trainer.max_time_s=0.000001")[0]["status"] == "paused"
    assert er.run_ensemble(RUNS, [f"results_root={root}"]) == "done"
    for name, args in RUNS:
        _same_rows(_rows(root, _rid(args, root)), solo_rows[name])


def test_a_member_that_reaches_the_target_stops_and_the_other_goes_on(tmp_path, solo_rows, monkeypatch):
    real = er.evaluate_length

    def fake(model, task, seq_len, g, *args, **kw):  # the held-out check of seed 0 says it is perfect
        out = real(model, task, seq_len, g, *args, **kw)
        if g.initial_seed() == check_seed_of(0) and kw.get("max_tokens") == 1 << 62:
            out = {**out, "accuracy": 1.0}
        return out

    monkeypatch.setattr(er, "evaluate_length", fake)
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}", "trainer.target_accuracy=0.99"]) == "done"
    (_, a), (_, b) = RUNS
    ra = _rows(tmp_path, _rid([*a, "trainer.target_accuracy=0.99"], tmp_path))
    rb = _rows(tmp_path, _rid([*b, "trainer.target_accuracy=0.99"], tmp_path))
    assert ra[0]["steps"] == 10 and ra[0]["stopped_early"] and [h["step"] for h in ra[0]["history"]] == [10]
    assert rb[0]["steps"] == 20 and not rb[0]["stopped_early"]
    # b went on as an ensemble of one, rebuilt from its state: still the solo run's numbers
    for key in CLOSE_KEYS:
        assert math.isclose(rb[0][key], solo_rows["b"][0][key], rel_tol=1e-4, abs_tol=1e-4), key
    assert rb[0]["history"][0]["accuracy"] < 0.99


def test_a_member_whose_loss_goes_non_finite_ends_nan_and_the_other_goes_on(tmp_path, solo_rows, monkeypatch):
    real_add = er.EnsembleStep.__init__

    def init(self, *args, **kw):  # member 0's loss reads as NaN from its 4th step (its gradient stays finite)
        real_add(self, *args, **kw)
        add = self.meters.add
        k = self.k

        def poisoned(loss, correct, scored, step, grad_norm=None):
            if k == 2 and int(step) >= 3:
                loss = loss.clone()
                loss[0] = float("nan")
            return add(loss, correct, scored, step, grad_norm)

        self.meters.add = poisoned

    monkeypatch.setattr(er.EnsembleStep, "__init__", init)
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}", "trainer.log_every=5"]) == "done"
    (_, a), (_, b) = RUNS
    ra = _rows(tmp_path, _rid(a, tmp_path))
    rb = _rows(tmp_path, _rid(b, tmp_path))
    assert ra[0]["status"] == "nan" and ra[0]["error"] == "non-finite training loss at step 4" and ra[0]["steps"] == 4
    assert not (run_dir(tmp_path, "ens", ra[0]["run_id"]) / CHECKPOINT).exists()
    assert rb[0]["status"] == "ok" and rb[0]["steps"] == 20
    for key in CLOSE_KEYS:
        assert math.isclose(rb[0][key], solo_rows["b"][0][key], rel_tol=1e-4, abs_tol=1e-4), key


def test_runs_that_differ_in_more_than_the_seed_are_refused(tmp_path, capsys):
    study = tmp_path / "study.txt"
    study.write_text("".join(f"{n} {' '.join(args)}\n" for n, args in RUNS) +
                     f"c {' '.join(BASE)} seed=2 trainer.lr=0.01 model.d_model=32\n")
    code = er.main([str(study), "--names", "a,c", f"results_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "run 'c' cannot join an ensemble with run 'a'" in err and "trainer.lr" in err and "model.d_model" in err
    assert "seed" not in err.split("differ in", 1)[1]
    assert not (tmp_path / "ens" / "rows").exists() or not any((tmp_path / "ens" / "rows").iterdir())


def test_a_failure_while_training_is_each_members_error_row(tmp_path, monkeypatch):
    real_call = er.EnsembleStep.__call__

    def call(self, batch):
        if int(self.step_t) == 12:
            raise RuntimeError("boom in a layer")
        return real_call(self, batch)

    monkeypatch.setattr(er.EnsembleStep, "__call__", call)
    assert er.run_ensemble(RUNS, [f"results_root={tmp_path}", "trainer.checkpoint_every_steps=5"]) == "done"
    for _, args in RUNS:
        rid = _rid(args, tmp_path)
        rows = _rows(tmp_path, rid)
        assert rows[0]["status"] == "error" and "boom in a layer" in rows[0]["error"]
        # as for a solo run, a failed run keeps its checkpoint (retry_failed=true continues it)
        assert torch.load(run_dir(tmp_path, "ens", rid) / CHECKPOINT, weights_only=True)["step"] == 10
