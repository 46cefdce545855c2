"""The shell drivers of GPU calls, run on the CPU: scripts/gpu_parallel.sh trains a study file's runs side by side,
spread round-robin over the host's GPUs (GPUS=N stands in for nvidia-smi), each run's log naming its GPU, and
scripts/gpu_snapshot.sh brings the study back into $OUT as tarballs of rows and run folders."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def _drive(study: Path, root: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """scripts/gpu_parallel.sh on `study` for 120 s a run, into `root`; it must succeed."""
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_parallel.sh"), str(study), "120", root], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_parallel_runs_are_spread_over_gpus_and_the_study_comes_back(tmp_path):
    study = tmp_path / "study.txt"
    lines = ["# a comment line, skipped", ""]
    for name, model in (("a", "mamba"), ("b", "lstm"), ("c", "s4")):
        lines.append(f"{name}  {' '.join(tiny_overrides(model))} study=par device=cpu")
    study.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    # MPS=1 on a machine without the MPS daemon: the runs go on, time-sliced, and their logs say so
    env = {**os.environ, "GPUS": "2", "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1", "MPS": "1"}
    _drive(study, str(tmp_path / "results"), tmp_path, env)
    logs = tmp_path / "results" / "par" / "logs"
    first = {p.stem: p.read_text().splitlines()[0] for p in logs.glob("*.log")}
    assert sorted(first) == ["a", "b", "c"]
    assert [first[n].split(" gpu ")[1].split(",")[0] for n in "abc"] == ["0 of 2", "1 of 2", "0 of 2"]
    fallback = "time-sliced (MPS=1 asked, but the MPS daemon did not start or run a CUDA program)"
    assert all(first[n].endswith(fallback) for n in "abc")
    rows = [json.loads(p.read_text()) for p in (tmp_path / "results" / "par" / "rows").glob("*.json")]
    assert len(rows) == 3
    assert {r["gpu_sharing"] for run in rows for r in run} == {fallback}  # every row says how its GPU was shared
    # the snapshot: rows and logs in par.tgz, run folders (kept models) in par_runs_<k>.tgz
    with tarfile.open(out / "par.tgz") as t:
        names = t.getnames()
    assert sum(n.endswith(".json") and "/rows/" in n for n in names) == 3 and not any("/runs/" in n for n in names)
    with tarfile.open(out / "par_runs_0.tgz") as t:
        assert sum(n.endswith("model.pt") for n in t.getnames()) == 3


def test_threads_mode_trains_each_gpus_runs_in_one_process(tmp_path):
    study = tmp_path / "study.txt"
    study.write_text("".join(f"{n}  {' '.join(tiny_overrides(m))} study=thr device=cpu\n"
                             for n, m in (("a", "mamba"), ("b", "s4"), ("c", "lstm"))))
    env = {**os.environ, "GPUS": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "THREADS": "1"}
    env.pop("OUT", None)
    _drive(study, str(tmp_path / "results"), tmp_path, env)
    folder = tmp_path / "results" / "thr"
    first = {p.stem: p.read_text().splitlines()[0] for p in (folder / "logs").glob("*.log")}
    assert [first[n].split(" gpu ")[1] for n in "abc"] == [
        f"{k} of 2, threads (one process per GPU, a thread per run)" for k in (0, 1, 0)]
    # two processes, one per GPU: a and c share the first
    assert sorted(p.name for p in folder.glob("multirun_gpu*.out")) == ["multirun_gpu0.out", "multirun_gpu1.out"]
    assert len(list((folder / "rows").glob("*.json"))) == 3
    for n in "abc":
        assert "rows written" in (folder / "logs" / f"{n}.log").read_text()


def test_a_call_on_a_warm_machine_resumes_from_its_own_newer_snapshots(tmp_path):
    # Each call starts from a copy of the working tree; when the previous call's snapshots were not brought home
    # first, the machine's own mirror of them is newer, and gpu_parallel.sh takes it (scripts/unpack_calls.py).
    study = tmp_path / "study.txt"
    study.write_text(f"a  {' '.join(tiny_overrides('mamba'))} study=warm device=cpu\n")
    mirror = tmp_path / "mirror"
    env = {**os.environ, "GPUS": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "SNAPSHOT_MIRROR": str(mirror)}

    def call() -> subprocess.CompletedProcess:
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        return _drive(study, "results", tmp_path, {**env, "OUT": str(out)})

    call()  # the run trains to the end; its snapshot is mirrored
    rows = list((tmp_path / "results" / "warm" / "rows").glob("*.json"))
    assert len(rows) == 1 and (mirror / "warm.tgz").exists() and (mirror / "warm_runs_0.tgz").exists()
    log = (tmp_path / "results" / "warm" / "logs" / "a.log").read_text()
    shutil.rmtree(tmp_path / "results")  # the next call's fresh copy of a working tree that never got the results
    res = call()
    assert "resuming from the newer of the working tree and this machine's previous snapshots" in res.stdout
    assert [p.name for p in (tmp_path / "results" / "warm" / "rows").glob("*.json")] == [rows[0].name]
    # the finished run was recognised and skipped, not trained again
    again = (tmp_path / "results" / "warm" / "logs" / "a.log").read_text()
    assert again.startswith(log) and "skipping run" in again[len(log):]


def test_ensemble_mode_trains_each_group_of_seeds_as_one_ensemble(tmp_path):
    # ENSEMBLE=1: runs that differ only in their seed go to one ssmbench.ensemble_run process, each ending with
    # its own rows; a run with other arguments is a group of its own
    study = tmp_path / "study.txt"
    tiny = " ".join(tiny_overrides("mamba")) + " study=ens device=cpu trainer.precision=fp32"
    study.write_text(f"a  {tiny} seed=0\nb  {tiny} seed=1\nc  {tiny} seed=0 trainer.lr=3e-3\n"
                     f"d  {tiny} seed=2\n")
    # NAMES picks runs of the file: d is left out
    env = {**os.environ, "GPUS": "2", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "ENSEMBLE": "1",
           "NAMES": "a,b,c"}
    env.pop("OUT", None)
    _drive(study, str(tmp_path / "results"), tmp_path, env)
    folder = tmp_path / "results" / "ens"
    first = {p.stem: p.read_text().splitlines()[0] for p in (folder / "logs").glob("*.log")}
    assert sorted(first) == ["a", "b", "c"]
    # the group {a, b} on GPU 0, c's own group on GPU 1
    assert [first[n].split(" gpu ")[1].split(",")[0] for n in "abc"] == ["0 of 2", "0 of 2", "1 of 2"]
    assert all("ensemble (one process per group" in first[n] for n in "abc")
    rows = [json.loads(p.read_text()) for p in (folder / "rows").glob("*.json")]
    assert len(rows) == 3
    ks = sorted(r[0]["ensemble_k"] for r in rows)
    assert ks == [1, 2, 2] and all(r[0]["status"] == "ok" for r in rows)
    assert sorted(p.name for p in folder.glob("ensemble_*.out")) == ["ensemble_0.out", "ensemble_1.out"]


def test_measure_then_train_trains_with_the_options_that_measured_faster(tmp_path):
    """scripts/gpu_measure_then_train.sh: the measurement's rows (here written beforehand, as step_options would on
    a GPU) pick the options, and the study then trains under them for the time left: the row says which ran."""
    from ssmbench.kernels.common.options import DEFAULT
    measure = tmp_path / "measure"
    rows_dir = measure / "step_options" / "rows"
    rows_dir.mkdir(parents=True)
    blh = DEFAULT.replace("fftconv=bhl", "fftconv=blh")  # the non-default layout
    rows_dir.joinpath("rows.json").write_text(json.dumps([
        {"experiment": "table1", "model": "h3", "ms_per_step": ms, "kernel_options": opts, "finite_loss": True}
        for opts, ms in ((DEFAULT, 10.0), (blh, 9.0))]))
    study = tmp_path / "study.txt"
    study.write_text(f"a  {' '.join(tiny_overrides('s4'))} study=mtt device=cpu\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1", "GPUS": "1",
           "MEASURE_OUT": str(measure), "MEASURE_STAGES": "none"}
    env.pop("SSMBENCH_FFTCONV", None)
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_measure_then_train.sh"), "300", str(study),
                          str(tmp_path / "results")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "options for the training: export SSMBENCH_FFTCONV=blh" in res.stdout
    (row_file,) = (tmp_path / "results" / "mtt" / "rows").glob("*.json")
    row = json.loads(row_file.read_text())
    row = row[0] if isinstance(row, list) else row
    assert "fftconv=blh" in row["kernel_options"] and "fftconv=blh" in row["train_kernel_options"]
    assert (out / "measure.tgz").exists()


def test_a_name_that_is_no_run_of_the_study_is_refused_before_anything_starts(tmp_path):
    # a typo in NAMES used to train nothing for that run, silently, and cost the GPU call
    study = tmp_path / "study.txt"
    study.write_text("# a comment\nalpha  model=s4\nbeta   model=h3\n")
    env = {**os.environ, "PYTHON": sys.executable, "NAMES": "alpha,bta", "MEASURE_OUT": str(tmp_path / "m"),
           "MEASURE_STAGES": "none"}
    for script, args in (("gpu_parallel.sh", [str(study), "60", str(tmp_path / "r")]),
                         ("gpu_measure_then_train.sh", ["60", str(study), str(tmp_path / "r")])):
        res = subprocess.run(["bash", str(REPO / "scripts" / script), *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, (script, res.stdout, res.stderr)
        assert "NAMES has 'bta', which is no run of" in res.stderr and "alpha beta" in res.stderr, res.stderr
        assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()  # nothing trained or measured
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_parallel.sh"), str(study), "60", str(tmp_path / "r")],
                         cwd=tmp_path, env={**env, "NAMES": "alpha", "CHECK_ONLY": "1"}, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and not (tmp_path / "r").exists(), res.stderr


def test_after_a_call_the_runs_are_unpacked_staged_and_reported(tmp_path):
    # scripts/after_gpu_call.sh: run A finished in the call (rows, model, no checkpoint), run B advanced (a newer
    # checkpoint); the tree gets both, git's index follows (A's checkpoint out, its model in; B's new checkpoint
    # staged although *.pt is ignored), and the study's report is regenerated
    from .test_report_paper import make_run

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    repo = tmp_path / "repo"
    runs = repo / "results" / "s" / "runs"
    for rid in "AB":
        (runs / rid).mkdir(parents=True)
        (runs / rid / "checkpoint.pt").write_bytes(b"old")
        (runs / rid / "progress.json").write_text(json.dumps({"status": "paused", "step": 10}))
    (repo / ".gitignore").write_text("*.pt\n")
    git("init", "-q")
    git("add", "-A")
    git("add", "-f", "results/s/runs/A/checkpoint.pt", "results/s/runs/B/checkpoint.pt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "before the call")

    call = tmp_path / "call"  # what the call sent back: the study's rows and logs, and its run folders
    snap = tmp_path / "snap" / "results" / "s"
    (snap / "runs" / "A").mkdir(parents=True)
    (snap / "runs" / "B").mkdir(parents=True)
    (snap / "rows").mkdir()
    rows = make_run("mamba", "selective_copy", 0, {64: 0.9})
    for row in rows:
        row["run_id"] = "A"
    (snap / "rows" / "A.json").write_text(json.dumps(rows))
    (snap / "runs" / "A" / "model.pt").write_bytes(b"model")
    (snap / "runs" / "A" / "progress.json").write_text(json.dumps({"status": "ok", "step": 20}))
    (snap / "runs" / "B" / "checkpoint.pt").write_bytes(b"newer")
    (snap / "runs" / "B" / "progress.json").write_text(json.dumps({"status": "paused", "step": 15}))
    call.mkdir()
    with tarfile.open(call / "s.tgz", "w:gz") as t:
        t.add(tmp_path / "snap" / "results", arcname="results")
    (call / "other.log").write_text("not a snapshot")

    env = {**os.environ, "PYTHON": sys.executable, "CALLS_DIR": str(tmp_path / "calls")}
    res = subprocess.run(["bash", str(REPO / "scripts" / "after_gpu_call.sh"), str(call)], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "1 checkpoints of runs in progress staged, 1 of finished runs dropped" in res.stdout
    assert len(list((tmp_path / "calls").glob("*/s.tgz"))) == 1  # the call's files kept where the next can't clobber
    assert (runs / "B" / "checkpoint.pt").read_bytes() == b"newer" and not (runs / "A" / "checkpoint.pt").exists()
    staged = git("diff", "--cached", "--name-status").split("\n")
    assert "D\tresults/s/runs/A/checkpoint.pt" in staged and "A\tresults/s/runs/A/model.pt" in staged
    assert "M\tresults/s/runs/B/checkpoint.pt" in staged
    assert (repo / "results" / "s" / "summary.md").exists()
