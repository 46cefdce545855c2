"""End to end on the CPU: a tiny sweep, determinism, divergence as a row, and a killed sweep that resumes."""

import json
import math
import os
import signal
import subprocess
import sys
import time

from ssmbench.report import write_report
from ssmbench.results import load_all
from ssmbench.run import execute, prepare

from .helpers import cli, compose_cfg, tiny_overrides


def _rows(folder):
    return load_all(folder)


def test_tiny_sweep_end_to_end(tmp_path):
    res = cli(["-m", "model=transformer,lstm", *tiny_overrides("transformer")[1:], f"results_root={tmp_path}",
               "study=tiny", "eval.lengths=[32,64]"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "== sweep done" in res.stdout and "this sweep: 2 finished" in res.stdout  # the closing summary
    assert f"next: ssmbench-report {tmp_path / 'tiny'}" in res.stdout
    rows = _rows(tmp_path / "tiny")
    assert len(rows) == 4  # 2 models x 2 evaluation lengths
    assert {r["model"] for r in rows} == {"transformer", "lstm"}
    for r in rows:
        assert r["status"] == "ok"
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["params"] > 0 and r["train_tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0
        assert r["train_peak_mem_bytes"] > 0
        for key in ("device", "torch", "triton", "cuda", "commit", "scan_backend"):
            assert r[key]
    text = write_report(tmp_path / "tiny")
    assert "L=32" in text and "L=64" in text and "transformer" in text
    for name in ("rows.csv", "summary.md", "accuracy.csv", "plots/accuracy.png", "plots/throughput.png",
                 "plots/memory.png"):
        assert (tmp_path / "tiny" / name).exists(), name


def test_same_seed_same_rows_on_cpu():
    volatile = {"wall_s", "train_time_s", "train_tokens_per_s", "eval_tokens_per_s", "train_peak_mem_bytes",
                "eval_peak_mem_bytes"}
    results = []
    for _ in range(2):
        p = prepare(compose_cfg(tiny_overrides("transformer") + ["device=cpu"]))
        rows = execute(p, "rid", "determinism")
        results.append([{k: v for k, v in r.items() if k not in volatile} for r in rows])
    assert results[0] == results[1]
    other = prepare(compose_cfg(tiny_overrides("transformer") + ["device=cpu", "seed=1"]))
    assert execute(other, "rid", "determinism")[0]["final_train_loss"] != results[0][0]["final_train_loss"]


def test_diverging_run_leaves_status_row_and_sweep_goes_on(tmp_path):
    # At lr=1e6 (its SSM parameters too, which S4 otherwise trains at its own lr_ssm) the S4 step size and poles
    # blow up and the loss turns NaN within a few steps.
    res = cli(["-m", "trainer.lr=1e6,1e-3", "trainer.ssm_lr=${trainer.lr}", "trainer.grad_clip=0",
               "trainer.warmup_steps=0", "trainer.weight_decay=0",
               *tiny_overrides("s4"), f"results_root={tmp_path}", "study=div"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _rows(tmp_path / "div")
    by_lr = {r["lr"]: r for r in rows}
    assert by_lr[1e6]["status"] == "nan" and "non-finite" in by_lr[1e6]["error"]
    assert math.isnan(by_lr[1e6]["accuracy"])
    assert by_lr[1e-3]["status"] == "ok"


def test_bad_point_of_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    res = cli(["-m", *tiny_overrides("transformer"), "task.n_data=4,40",
               f"results_root={tmp_path}", "study=bad"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    statuses = sorted(r["status"] for r in _rows(tmp_path / "bad"))
    assert statuses == ["error", "ok"]
    assert any("task.seq_len" in r["error"] for r in _rows(tmp_path / "bad"))


def test_sweep_killed_with_sigkill_resumes_without_losing_or_duplicating_rows(tmp_path):
    args = ["-m", "seed=0,1,2,3", *tiny_overrides("transformer"), "trainer.steps=60", f"results_root={tmp_path}",
            "study=kill", "eval.lengths=[32,48]"]
    rows_dir = tmp_path / "kill" / "rows"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list(rows_dir.glob("*.json"))) < 1:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be killed; make the runs longer"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in rows_dir.glob("*.json")}
    assert 1 <= len(first) < 4
    assert not list(rows_dir.glob(".*.tmp")) or True  # a temp file may remain; it is never read as rows
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipping run" in res.stdout + res.stderr
    files = sorted(rows_dir.glob("*.json"))
    assert len(files) == 4
    for name, mtime in first.items():
        assert (rows_dir / name).stat().st_mtime_ns == mtime, "a finished run was run again"
    rows = [r for f in files for r in json.loads(f.read_text())]
    keys = [(r["seed"], r["eval_len"]) for r in rows]
    assert sorted(keys) == sorted((s, L) for s in range(4) for L in (32, 48))  # every row exactly once
