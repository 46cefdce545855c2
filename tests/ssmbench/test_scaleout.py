"""Scale-out (issue 17): the launcher presets, pinning a sweep's jobs to GPUs, SIGUSR2 (submitit's pre-timeout
signal) pausing a run, the SLURM path on the CPU through submitit's local executor (a killed sweep re-run resumes
its runs from their checkpoints, every row once), and `ssmbench-report DIR1 DIR2` merging hosts' rows."""

import copy
import importlib.util
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module

import ssmbench.cli as cli_module
from ssmbench.checkpoint import CHECKPOINT
from ssmbench.merge import merge_rows, merge_sections, write_merged_rows
from ssmbench.report import main as report_main
from ssmbench.results import load_all, read_rows, run_id, write_rows
from ssmbench.run import execute, prepare

from .helpers import cli, compose_cfg, tiny_overrides


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        return False


def _needs(plugin: str, extra: str = "launchers"):
    return pytest.mark.skipif(not _installed(plugin),
                              reason=f"{plugin} is not installed: pip install -e \".[{extra}]\" (make test does)")


needs_joblib = _needs("hydra_plugins.hydra_joblib_launcher")
needs_submitit = _needs("hydra_plugins.hydra_submitit_launcher")


def _launcher(preset: str):
    with initialize_config_module(config_module="ssmbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    return cfg.hydra.launcher


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --- the presets -------------------------------------------------------------------------------------------------

@needs_joblib
def test_local_gpus_preset_runs_gpus_times_jobs_per_gpu(monkeypatch):
    launcher = _launcher("local_gpus")
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == max(1, _gpus())  # SSMBENCH_JOBS_PER_GPU unset: one job a GPU
    monkeypatch.setenv("SSMBENCH_JOBS_PER_GPU", "3")
    assert launcher.n_jobs == 3 * max(1, _gpus())


@needs_submitit
def test_slurm_preset_asks_for_a_gpu_a_job_and_requeues():
    launcher = _launcher("slurm")
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.timeout_min > 0 and "partition" in launcher
    assert launcher.additional_parameters.requeue is True  # sbatch --requeue: preempted / failed nodes come back
    assert launcher.max_num_timeout >= 1  # a signal outside training: submitit requeues rather than failing


def test_ray_preset_composes_without_the_plugin(monkeypatch):
    launcher = _launcher("ray_local")
    assert launcher._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.ray.init.address is None  # a local Ray instance
    monkeypatch.setenv("SSMBENCH_JOBS_PER_GPU", "4")
    assert launcher.ray.remote.num_gpus == (0.25 if _gpus() else 0)


# --- pinning -----------------------------------------------------------------------------------------------------

def _as_sweep_job(monkeypatch, num: int, gpus: int):
    monkeypatch.setattr(cli_module, "_in_sweep", lambda: True)
    monkeypatch.setattr(cli_module, "_visible_gpus", lambda: gpus)
    monkeypatch.setattr(cli_module, "HydraConfig",
                        SimpleNamespace(get=lambda: SimpleNamespace(job=SimpleNamespace(num=num))))


def _pinned(device: str, slot_dir: Path):
    with cli_module.pinned_gpu(device, slot_dir) as gpu:
        return gpu


def test_jobs_are_pinned_only_when_auto_in_a_sweep_on_several_gpus(monkeypatch, tmp_path):
    assert _pinned("auto", tmp_path) is None  # not a sweep job
    for num, gpus, device, expected in [(0, 4, "auto", 0), (5, 4, "auto", 1), (7, 2, "auto", 1), (3, 1, "auto", None),
                                        (3, 0, "auto", None), (5, 4, "cuda:0", None), (5, 4, "cpu", None)]:
        _as_sweep_job(monkeypatch, num, gpus)  # every slot free: the job number's GPU
        assert _pinned(device, tmp_path) == expected, (num, gpus, device)


def test_a_job_takes_a_free_gpu_not_its_job_numbers(monkeypatch, tmp_path):
    """The joblib launcher gives job 2 to whichever worker finished first; with GPU 0 still busy with job 0, job 2
    must go to GPU 1 (pinning by job number put both on GPU 0 and left GPU 1 idle: results/scaleout)."""
    _as_sweep_job(monkeypatch, 0, 2)
    with cli_module.pinned_gpu("auto", tmp_path) as first:
        _as_sweep_job(monkeypatch, 2, 2)
        assert first == 0 and _pinned("auto", tmp_path) == 1
        with cli_module.pinned_gpu("auto", tmp_path) as second:
            assert second == 1
            _as_sweep_job(monkeypatch, 4, 2)
            assert _pinned("auto", tmp_path) == 0  # more jobs than slots: shares by job number
    assert _pinned("auto", tmp_path) == 0  # both slots released when their jobs ended


def test_slots_fill_breadth_first_with_several_jobs_per_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SSMBENCH_JOBS_PER_GPU", "2")
    held = []
    for num in range(4):
        _as_sweep_job(monkeypatch, 0, 2)  # every job says 0: only the slots spread them
        cm = cli_module.pinned_gpu("auto", tmp_path)
        held.append((cm, cm.__enter__()))
    assert [g for _, g in held] == [0, 1, 0, 1]
    for cm, _ in held:
        cm.__exit__(None, None, None)
    monkeypatch.setenv("SSMBENCH_JOBS_PER_GPU", "two")
    with pytest.raises(ValueError, match="SSMBENCH_JOBS_PER_GPU='two'"):
        _pinned("auto", tmp_path)


def test_a_slot_held_by_a_dead_process_is_free(monkeypatch, tmp_path):
    """flock belongs to the process: a job killed while training leaves no stale lock behind."""
    slot_dir = tmp_path
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
            "from ssmbench.gpu_slots import take_slot; print(take_slot(Path(sys.argv[1]), 2, 1)[0])")
    root = str(Path(cli_module.__file__).resolve().parents[1])
    assert subprocess.run([sys.executable, "-c", code, str(slot_dir), root], capture_output=True, text=True,
                          check=True).stdout.strip() == "0"
    _as_sweep_job(monkeypatch, 0, 2)
    assert _pinned("auto", tmp_path) == 0  # the child held GPU 0's slot and exited without releasing it


def test_a_pinned_job_keeps_its_run_id_and_records_its_gpu(tmp_path, monkeypatch):
    cfg = compose_cfg([*tiny_overrides("transformer"), f"results_root={tmp_path}", "study=pin"])
    unpinned = run_id(prepare(cfg).identity)
    seen = {}

    def fake_execute(p, rid, study, **kw):
        seen["device"], seen["rid"] = p.device, rid
        return [{"run_id": rid, "model": "transformer", "task": "selective_copy", "eval_len": 32, "status": "ok",
                 "accuracy": 0.5, "loss": 1.0, "steps": 20, "params": 1, "train_tokens_per_s": 1.0}]

    _as_sweep_job(monkeypatch, num=5, gpus=4)
    monkeypatch.setattr(cli_module, "execute", fake_execute)
    monkeypatch.setattr(torch.cuda, "set_device", lambda k: seen.setdefault("set_device", k))
    rows = cli_module.run_one(cfg)
    assert seen["device"] == torch.device("cuda", 1) and seen["set_device"] == 1
    assert seen["rid"] == unpinned  # the identity holds the device type, never the index
    assert [r["gpu"] for r in rows] == [1]
    assert read_rows(tmp_path / "pin" / "rows" / f"{unpinned}.json")[0]["gpu"] == 1


# --- SIGUSR2 -----------------------------------------------------------------------------------------------------

def test_sigusr2_pauses_training_with_a_checkpoint(tmp_path):
    """submitit has SLURM send SIGUSR2 before the time limit: the run checkpoints and pauses, as on SIGTERM, then
    hands the signal to the handler that was there before (submitit's, which requeues the job)."""
    forwarded = []

    def ignore(signum, frame):  # stands in for submitit's handler; must not end pytest
        forwarded.append((signum, (tmp_path / "run" / CHECKPOINT).exists()))

    previous = signal.signal(signal.SIGUSR2, ignore)
    try:
        p = prepare(compose_cfg([*tiny_overrides("transformer"), "device=cpu", "trainer.steps=1000000",
                                 f"results_root={tmp_path}"]))
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR2))
        timer.start()
        rows = execute(p, "usr2", "s", run_folder=tmp_path / "run")
        timer.join()
        assert signal.getsignal(signal.SIGUSR2) is ignore  # the handler in place before training is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert {r["status"] for r in rows} == {"paused"}
    assert 0 < rows[0]["steps"] < 1000000
    assert (tmp_path / "run" / CHECKPOINT).exists()
    assert forwarded == [(signal.SIGUSR2, True)]  # once, after the checkpoint was written


# --- the SLURM path on the CPU (submitit's local executor) -------------------------------------------------------

@pytest.mark.slow
@needs_submitit
def test_submitit_sweep_killed_then_rerun_resumes_and_writes_every_row_once(tmp_path):
    """A 4-job sweep through hydra/launcher=submitit_local (the SLURM launcher's code path, jobs run as local
    processes) is killed with SIGKILL once a run has a checkpoint; the same command then finishes the sweep: every
    row exactly once, and the runs that were killed mid-training resume from their checkpoints."""
    args = ["-m", "hydra/launcher=submitit_local", "seed=0,1,2,3", *tiny_overrides("transformer"),
            "trainer.steps=150", "trainer.checkpoint_every_steps=1", f"results_root={tmp_path}", "study=sub",
            "eval.lengths=[32,48]"]
    study = tmp_path / "sub"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "ssmbench.cli", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the local executor's job processes are in the sweep's process group: killpg ends them all
        deadline = time.time() + 180
        while time.time() < deadline and not list(study.glob(f"runs/*/{CHECKPOINT}")):
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before a checkpoint appeared; make the runs longer"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = {p.parent.name for p in study.glob(f"runs/*/{CHECKPOINT}")
              if not (study / "rows" / f"{p.parent.name}.json").exists()}
    assert killed, "no run was killed mid-training"

    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "== sweep done" in res.stdout and "4 runs ok" in res.stdout
    rows = load_all(study)
    assert not rows.unreadable
    assert sorted((r["seed"], r["eval_len"]) for r in rows) == [(s, L) for s in range(4) for L in (32, 48)]
    assert {r["status"] for r in rows} == {"ok"} and {r["steps"] for r in rows} == {150}
    for r in rows:
        if r["run_id"] in killed:
            assert r["resumes"] >= 1, r["run_id"]
    assert not list(study.glob(f"runs/*/{CHECKPOINT}"))  # finished runs drop their checkpoints


# --- merging hosts' folders --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_rows(tmp_path_factory):
    """The rows of one tiny run (two evaluation lengths), to copy as runs of several hosts."""
    p = prepare(compose_cfg([*tiny_overrides("transformer"), "device=cpu", "eval.lengths=[32,48]",
                             f"results_root={tmp_path_factory.mktemp('r')}"]))
    return execute(p, "base", "s")


def _run(rows, rid, seed, **changes):
    return [{**copy.deepcopy(r), "run_id": rid, "seed": seed, **changes} for r in rows]


def _put(folder, rows):
    write_rows(folder / "rows" / f"{rows[0]['run_id']}.json", rows)


def test_report_merges_hosts_drops_duplicates_and_lists_conflicts(tmp_path, real_rows):
    a, b, c = _run(real_rows, "aaaa", 0), _run(real_rows, "bbbb", 1), _run(real_rows, "cccc", 2)
    host1, host2 = tmp_path / "host1", tmp_path / "host2"
    _put(host1, a)
    _put(host1, b)
    _put(host2, b)  # the same run on both hosts, same result: a duplicate
    _put(host2, c)  # only on host2
    a_other = copy.deepcopy(a)
    a_other[1]["accuracy"] = 0.123456  # same run id and length, another result: a conflict
    _put(host2, a_other)
    before = {p: p.read_bytes() for p in (host2 / "rows").iterdir()}

    merged = merge_rows([host1, host2])
    assert sorted(merged.runs) == ["aaaa", "bbbb", "cccc"] and merged.duplicates == 3  # b's 2 rows, a's other row
    assert list(merged.conflicts) == [("aaaa", 48)]

    report_main([str(host1), str(host2), "--quiet"])
    rows = load_all(host1)  # host1 now holds the merged study
    assert sorted((r["run_id"], r["eval_len"]) for r in rows) == [(rid, L) for rid in ("aaaa", "bbbb", "cccc")
                                                                   for L in (32, 48)]
    kept = next(r for r in rows if r["run_id"] == "aaaa" and r["eval_len"] == 48)
    assert kept["accuracy"] == a[1]["accuracy"]  # the first folder's row is kept
    assert {p: p.read_bytes() for p in (host2 / "rows").iterdir()} == before  # the other folders are only read
    summary = (host1 / "summary.md").read_text()
    assert "## Folders merged" in summary and "## Conflicting rows" in summary
    conflict_lines = [line for line in summary.splitlines() if line.startswith("| aaaa |")]
    assert len(conflict_lines) == 2 and any("0.1235" in line for line in conflict_lines)
    assert summary.index("## Conflicting rows") < summary.index("## Accuracy")
    assert "6 rows" in summary  # 3 runs x 2 lengths, each once

    out = tmp_path / "merged"
    report_main([str(host2), str(host1), "--out", str(out), "--quiet"])
    rows = load_all(out)
    assert len(rows) == 6
    kept = next(r for r in rows if r["run_id"] == "aaaa" and r["eval_len"] == 48)
    assert kept["accuracy"] == 0.123456  # now host2 comes first
    assert (out / "rows.csv").exists() and (out / "plots" / "accuracy.png").exists()


def test_merge_without_conflicts_says_so_and_replaces_an_unreadable_file(tmp_path, real_rows):
    host1, host2 = tmp_path / "h1", tmp_path / "h2"
    _put(host1, _run(real_rows, "aaaa", 0))
    (host1 / "rows" / "bbbb.json").write_text('[{"run_id": "bbbb", "accur')  # cut short
    _put(host2, _run(real_rows, "aaaa", 0))
    _put(host2, _run(real_rows, "bbbb", 1, accuracy=math.nan, status="error"))
    merged = merge_rows([host1, host2])
    assert not merged.conflicts and merged.duplicates == 2
    assert [name for name, _ in merged.sources[0].unreadable] == ["bbbb.json"]
    assert "## Conflicting rows\n\nNone" in merge_sections(merged, host1, written=1)
    assert write_merged_rows(merged, host1) == [host1 / "rows" / "bbbb.json"]  # aaaa is there already
    assert read_rows(host1 / "rows" / "bbbb.json")[0]["status"] == "error"
    assert len(list((host1 / "rows").glob("bbbb.json.corrupt-*"))) == 1  # kept aside, as results.finished does
