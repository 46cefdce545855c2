"""ssmbench.multirun: several runs in one process, a thread each. Each run must be the run `ssmbench <args>` makes
(same rows, bit for bit on the CPU), with its own log; a config error in any line stops all before training."""

import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import cli, tiny_overrides

REPO = Path(__file__).resolve().parents[2]
# what may differ between two executions of the same run: clocks, throughput, the host
VOLATILE = {"wall_s", "train_time_s", "train_tokens_per_s", "eval_tokens_per_s", "eval_time_s", "timestamp",
            "hostname", "pid", "config", "train_peak_mem_bytes", "eval_peak_mem_bytes"}


def _multirun(args, cwd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmbench.multirun", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _rows(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.glob("rows/*.json")):
        rows = json.loads(p.read_text())
        rows = rows["rows"] if isinstance(rows, dict) else rows
        out[p.stem] = [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]
    return out


def test_threads_make_the_same_runs_as_separate_commands(tmp_path):
    study = tmp_path / "study.txt"
    runs = {"m": tiny_overrides("mamba"), "t": tiny_overrides("transformer")}
    study.write_text("# two runs\n\n" + "".join(f"{n} {' '.join(a)} study=mr device=cpu\n" for n, a in runs.items()))
    res = _multirun([str(study), f"results_root={tmp_path / 'threads'}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for n, args in runs.items():
        r = cli([*args, "study=mr", "device=cpu", f"results_root={tmp_path / 'alone'}"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    threads, alone = _rows(tmp_path / "threads" / "mr"), _rows(tmp_path / "alone" / "mr")
    assert len(threads) == 2 and threads == alone
    # each run's log holds its own lines only
    logs = tmp_path / "threads" / "mr" / "logs"
    for n, model in (("m", "mamba"), ("t", "transformer")):
        text = (logs / f"{n}.log").read_text()
        assert "rows written" in text and f"({model} on selective_copy" in text
        other = "transformer" if model == "mamba" else "mamba"
        assert f"({other} on selective_copy" not in text


def test_a_config_error_names_the_run_and_nothing_trains(tmp_path):
    study = tmp_path / "study.txt"
    study.write_text(f"good {' '.join(tiny_overrides('mamba'))} study=bad device=cpu\n"
                     f"typo {' '.join(tiny_overrides('mamba'))} study=bad device=cpu task.seq_lenn=5\n")
    res = _multirun([str(study), f"results_root={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 2
    assert "run 'typo'" in res.stderr and "seq_lenn" in res.stderr
    assert not (tmp_path / "bad").exists()


def test_names_select_runs_and_an_unknown_name_is_refused(tmp_path):
    study = tmp_path / "study.txt"
    study.write_text(f"a {' '.join(tiny_overrides('s4'))} study=sel device=cpu\n"
                     f"b {' '.join(tiny_overrides('s4'))} study=sel device=cpu seed=1\n")
    res = _multirun([str(study), "--names", "nope", f"results_root={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 2 and "no run 'nope'" in res.stderr
    res = _multirun([str(study), "--names", "b", f"results_root={tmp_path}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.stem for p in (tmp_path / "sel" / "logs").glob("*.log")] == ["b"]
    assert len(list((tmp_path / "sel" / "rows").glob("*.json"))) == 1


def test_sigterm_pauses_every_run_and_the_same_command_continues_them(tmp_path):
    import signal
    import time

    study = tmp_path / "study.txt"
    long = ["trainer.steps=100000", "trainer.check_every=50", "trainer.checkpoint_every_s=3600"]
    study.write_text("".join(f"{n} {' '.join(tiny_overrides(m) + long)} study=sig device=cpu\n"
                             for n, m in (("m", "mamba"), ("s", "s4"))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ssmbench.multirun", str(study), f"results_root={tmp_path}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "sig"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(folder.glob("runs/*/run.json"))) < 2:
        time.sleep(0.2)  # both runs set up (run_one writes run.json just before training)
    time.sleep(4)  # some steps of each
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # the runs did not stop: fail, and leave no process behind
        proc.kill()
        raise
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    progress = [json.loads(p.read_text()) for p in folder.glob("runs/*/progress.json")]
    assert len(progress) == 2 and all(p["status"] == "paused" and p["step"] > 0 for p in progress), progress
    assert len(list(folder.glob("runs/*/checkpoint.pt"))) == 2 and not list(folder.glob("rows/*.json"))
    # the same command continues both from their checkpoints (here with a budget, so that it ends by itself)
    res = _multirun([str(study), f"results_root={tmp_path}", "trainer.max_time_s=2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    for p in folder.glob("runs/*/progress.json"):
        after = json.loads(p.read_text())
        before = next(b for b in progress if b["run_id"] == after["run_id"])
        assert after["status"] == "paused" and after["step"] > before["step"] and after["resumes"] == 1


def test_a_missing_study_file_or_a_repeated_name_is_named(tmp_path):
    res = _multirun([str(tmp_path / "nope.txt")], cwd=tmp_path)
    assert res.returncode == 2 and "study file:" in res.stderr and "nope.txt" in res.stderr
    study = tmp_path / "study.txt"
    study.write_text("a model=s4\n# comment\na model=mamba\n")
    res = _multirun([str(study)], cwd=tmp_path)
    assert res.returncode == 2 and "study.txt:3: run name 'a' appears twice" in res.stderr
