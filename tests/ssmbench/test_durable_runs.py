"""Durable runs on the CPU: checkpoints, pauses, resumes after SIGKILL, corrupt checkpoints, kept models."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import torch

from ssmbench.checkpoint import CHECKPOINT, MODEL, PROGRESS
from ssmbench.reeval import evaluate_kept
from ssmbench.report import write_report
from ssmbench.results import load_all

from .helpers import cli, tiny_overrides

# Fields that measure time or the machine, or count this run's calls: everything else must match exactly.
VOLATILE = {"wall_s", "train_time_s", "train_tokens_per_s", "eval_tokens_per_s", "train_peak_mem_bytes",
            "eval_peak_mem_bytes", "resumes", "config", "run_id"}
LONG = [*tiny_overrides("mamba"), "trainer.steps=80", "trainer.check_every=20", "trainer.log_every=7"]


def _only_run(root, study):
    runs = list((root / study / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def _stable(rows):
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: r["eval_len"])


def _weights(run):
    return torch.load(run / MODEL, weights_only=True)["model"]


def _uninterrupted(tmp_path):
    root = tmp_path / "whole"
    res = cli([*LONG, f"results_root={root}", "study=s"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_all(root / "s"), _weights(_only_run(root, "s"))


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    rows_ref, weights_ref = _uninterrupted(tmp_path)
    root = tmp_path / "killed"
    args = [*LONG, f"results_root={root}", "study=s", "trainer.checkpoint_every_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(root.glob("s/runs/*/" + CHECKPOINT)):
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.5))  # somewhere in the run, maybe inside a checkpoint write
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run = _only_run(root, "s")
    killed_at = torch.load(run / CHECKPOINT, weights_only=True)["step"]
    assert 1 <= killed_at < 80
    assert not (root / "s" / "rows").exists() or not list((root / "s" / "rows").glob("*.json"))
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = load_all(root / "s")
    assert _stable(rows) == _stable(rows_ref)
    assert rows[0]["resumes"] == 1 and rows[0]["steps"] == 80
    weights = _weights(run)
    assert weights.keys() == weights_ref.keys()
    for k in weights:
        assert torch.equal(weights[k], weights_ref[k]), k
    assert not (run / CHECKPOINT).exists()  # the finished run's checkpoint is gone, its model kept


def test_time_budget_pauses_and_the_next_calls_continue(tmp_path):
    rows_ref, weights_ref = _uninterrupted(tmp_path)
    root = tmp_path / "paused"
    args = [*LONG, f"results_root={root}", "study=s", "trainer.max_time_s=0.3"]
    calls = 0
    while not list(root.glob("s/rows/*.json")):
        calls += 1
        assert calls < 60, "the run never finished"
        res = cli(args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        if not list(root.glob("s/rows/*.json")):
            assert "paused at step" in res.stderr + res.stdout
            progress = json.loads((_only_run(root, "s") / PROGRESS).read_text())
            assert progress["status"] == "paused" and 0 < progress["step"] < 80
            if calls == 1:  # the report lists a paused run apart, and gives it no result
                text = write_report(root / "s")
                assert "No run has finished yet" in text and "Runs in progress" in text and "| mamba |" in text
    assert calls >= 2
    rows = load_all(root / "s")
    assert _stable(rows) == _stable(rows_ref)
    assert rows[0]["resumes"] == calls - 1
    steps = [h["step"] for h in rows[0]["history"]]
    assert steps == [20, 40, 60]  # the held-out curve continues across the pauses, each check once
    # each check's largest gradient norm covers every step since the previous one, across the pauses too: the rows
    # equal the uninterrupted run's (above), whose maxima are over whole intervals
    assert all(isinstance(h["grad_norm_max"], float) and h["grad_norm_max"] > 0 for h in rows[0]["history"])
    weights = _weights(_only_run(root, "s"))
    assert all(torch.equal(weights[k], weights_ref[k]) for k in weights)


def test_corrupt_checkpoint_is_named_and_the_run_starts_over(tmp_path):
    root = tmp_path / "corrupt"
    args = [*LONG, f"results_root={root}", "study=s", "trainer.max_time_s=0.05"]
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = _only_run(root, "s")
    ckpt = run / CHECKPOINT
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # as if the disk lost the end of it
    (run / f".{CHECKPOINT}.abc.tmp").write_bytes(b"half a write")  # what a kill mid-write leaves behind
    res = cli([*LONG, f"results_root={root}", "study=s"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert str(ckpt) in out and "starts over" in out
    rows = load_all(root / "s")
    assert rows[0]["status"] == "ok" and rows[0]["resumes"] == 0 and rows[0]["steps"] == 80
    assert list(run.glob(f"{CHECKPOINT}.bad-*"))


def test_kept_model_is_evaluated_at_new_lengths(tmp_path):
    root = tmp_path / "kept"
    res = cli([*tiny_overrides("transformer"), f"results_root={root}", "study=s", "eval.lengths=[32]"],
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = _only_run(root, "s")
    before = load_all(root / "s")
    new = evaluate_kept(run, ["eval.lengths=[16,32,48]", "device=cpu"])
    assert [r["eval_len"] for r in new] == [16, 32, 48]
    rows = load_all(root / "s")
    assert sorted(r["eval_len"] for r in rows) == [16, 32, 48]  # 32 replaced, not duplicated
    row32 = next(r for r in rows if r["eval_len"] == 32)
    assert row32["accuracy"] == before[0]["accuracy"]  # same held-out data as at the end of training
    assert row32["evaluated_by"] == "ssmbench-eval" and row32["model"] == "transformer"
    assert row32["eval_precision"] == "fp32"  # what this evaluation ran in, beside the training's `precision`
    assert all(0 <= r["accuracy"] <= 1 and not math.isnan(r["accuracy"]) for r in rows)


def test_eval_cli_names_a_bad_key_and_a_missing_model(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "ssmbench.reeval", str(tmp_path), "eval.lenghts=[4]"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "eval.lenghts" in res.stderr
    res = subprocess.run([sys.executable, "-m", "ssmbench.reeval", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and MODEL in res.stderr


def test_sigterm_checkpoints_then_ends_the_sweep(tmp_path):
    """SIGTERM (a scheduler, or a user's kill) pauses the run in training with a checkpoint, then ends the process
    as the signal asks: the sweep does not go on to its next run. The same command continues."""
    root = tmp_path / "term"
    args = ["-m", "seed=0,1", *LONG, "trainer.steps=100000", f"results_root={root}", "study=s"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(root.glob("s/runs/*/run.json")):
            time.sleep(0.05)
        time.sleep(2.0)  # into training
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == -signal.SIGTERM
    finally:
        proc.kill()
    runs = list((root / "s" / "runs").iterdir())
    assert len(runs) == 1, "the sweep went on to its next run after SIGTERM"
    state = torch.load(runs[0] / CHECKPOINT, weights_only=True)
    assert 0 < state["step"] < 100000
    assert json.loads((runs[0] / PROGRESS).read_text())["status"] == "paused"


def test_a_row_names_the_kernel_options_of_every_piece(tmp_path, monkeypatch):
    """A run paused under one set of kernel options and continued under another (kernels/common/options.py:
    environment variables, so the run id stays) says so in its row; a run under one set names it once."""
    from ssmbench.kernels.common.options import DEFAULT, OPTIONS
    for name in OPTIONS:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "mixed"
    args = [*LONG, f"results_root={root}", "study=s", "trainer.max_time_s=0.05"]
    monkeypatch.setenv("SSMBENCH_EMBED", "gather")
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0 and "paused at step" in res.stderr + res.stdout, res.stderr[-3000:]
    gather = DEFAULT.replace("embed=onehot", "embed=gather")
    monkeypatch.setenv("SSMBENCH_EMBED", "onehot")
    for _ in range(60):
        if list(root.glob("s/rows/*.json")):
            break
        assert cli(args, cwd=tmp_path).returncode == 0
    row = load_all(root / "s")[0]
    onehot = DEFAULT
    assert row["train_kernel_options"] == f"{gather} then {onehot}"
    assert row["kernel_options"] == onehot  # the process that wrote the row (and evaluated)
    rows_ref, _ = _uninterrupted(tmp_path)
    assert rows_ref[0]["train_kernel_options"] == onehot  # (the environment still says onehot)
