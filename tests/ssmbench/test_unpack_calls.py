"""scripts/unpack_calls.py: unpacking several GPU calls' snapshots keeps the furthest copy of every run, never
moves a run backwards, and warns when two calls trained the same run from the same checkpoint."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "unpack_calls.py"
STUDY = "st"


def _run(tree: Path, rid: str, step: int, finished: bool = False, tag: str = "") -> None:
    """A run as a tree holds it: checkpoint bytes that say whose copy it is, progress, a log naming the run."""
    study = tree / "results" / STUDY
    run = study / "runs" / rid
    run.mkdir(parents=True, exist_ok=True)
    (run / "checkpoint.pt").write_bytes(f"ckpt {tag} {step}".encode())
    (run / "progress.json").write_text(json.dumps({"run_id": rid, "status": "paused", "step": step}))
    (run / "run.json").write_text(json.dumps({"run_id": rid}))
    (study / "logs").mkdir(exist_ok=True)
    (study / "logs" / f"name_{rid}.log").write_text(f"{tag}: run {rid} paused at step {step}\n")
    if finished:
        (study / "rows").mkdir(exist_ok=True)
        (study / "rows" / f"{rid}.json").write_text(json.dumps([{"run_id": rid, "tag": tag}]))


def _call(tmp_path: Path, name: str, runs: dict) -> Path:
    """A call folder as gpu_snapshot.sh fills it: <study>.tgz without run folders, <study>_runs_0.tgz with them."""
    tree = tmp_path / f"{name}_tree"
    for rid, (step, finished) in runs.items():
        _run(tree, rid, step, finished, tag=name)
    (tree / "results" / STUDY / "summary.md").write_text(f"summary of {name}\n")
    out = tmp_path / name
    out.mkdir()
    study = tree / "results" / STUDY
    with tarfile.open(out / f"{STUDY}.tgz", "w:gz") as tar:
        tar.add(study, arcname=f"results/{STUDY}", filter=lambda m: None if "/runs" in m.name else m)
    with tarfile.open(out / f"{STUDY}_runs_0.tgz", "w:gz") as tar:
        for run in sorted((study / "runs").iterdir()):
            tar.add(run, arcname=f"results/{STUDY}/runs/{run.name}")
    (out / "notes.txt").write_text("not a tarball, ignored")
    return out


def _unpack(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--root", str(root)],
                          capture_output=True, text=True)


def _ckpt(root: Path, rid: str) -> str:
    return (root / "results" / STUDY / "runs" / rid / "checkpoint.pt").read_text()


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_furthest_copy_wins_and_a_branch_is_warned(tmp_path):
    root = tmp_path / "repo"
    _run(root, "aaaa", 100, tag="local")
    (root / "results" / STUDY / "runs" / "aaaa" / "stale.pt").write_text("x")
    _run(root, "bbbb", 50, tag="local")
    # three calls made without unpacking in between: each resumed aaaa from the local step 100
    c1 = _call(tmp_path, "call1", {"aaaa": (300, False), "bbbb": (40, False)})
    c2 = _call(tmp_path, "call2", {"aaaa": (200, False), "cccc": (10, False)})
    c3 = _call(tmp_path, "call3", {"aaaa": (100, False)})
    res = _unpack(root, c1, c2, c3)
    assert res.returncode == 0, res.stderr
    assert _ckpt(root, "aaaa") == "ckpt call1 300"
    assert not (root / "results" / STUDY / "runs" / "aaaa" / "stale.pt").exists()  # the folder is replaced whole
    assert "call1: run aaaa paused at step 300" in (root / "results" / STUDY / "logs" / "name_aaaa.log").read_text()
    assert _ckpt(root, "bbbb") == "ckpt local 50"  # a call older than the local copy does not move it back
    assert _ckpt(root, "cccc") == "ckpt call2 10"  # a run new in a call arrives
    assert not (root / "results" / STUDY / "summary.md").exists()  # study files are left to ssmbench-report
    warnings = [line for line in res.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, res.stdout
    assert "run aaaa" in warnings[0] and "call2 and call1 both trained from step 100" in warnings[0]
    assert "100 steps" in warnings[0]
    assert f"{STUDY} aaaa: from call1, step 100 -> 300" in res.stdout
    assert f"{STUDY} bbbb: kept local, step 50" in res.stdout


def test_finished_beats_further_unfinished_and_rows_come_along(tmp_path):
    root = tmp_path / "repo"
    _run(root, "aaaa", 100, tag="local")
    c1 = _call(tmp_path, "call1", {"aaaa": (500, True)})
    c2 = _call(tmp_path, "call2", {"aaaa": (900, False)})
    res = _unpack(root, c2, c1)
    assert res.returncode == 0, res.stderr
    assert _ckpt(root, "aaaa") == "ckpt call1 500"
    assert json.loads((root / "results" / STUDY / "rows" / "aaaa.json").read_text())[0]["tag"] == "call1"


def test_local_run_further_than_every_call_is_untouched(tmp_path):
    root = tmp_path / "repo"
    _run(root, "aaaa", 1000, tag="local")
    before = _files(root)
    c1 = _call(tmp_path, "call1", {"aaaa": (500, False)})
    c2 = _call(tmp_path, "call2", {"aaaa": (1000, False)})  # equal: the local copy wins ties
    res = _unpack(root, c1, c2)
    assert res.returncode == 0, res.stderr
    assert _files(root) == before
    assert "WARNING" not in res.stdout


def test_rows_without_run_folder_are_copied_only_when_absent(tmp_path):
    root = tmp_path / "repo"
    (root / "results" / STUDY / "rows").mkdir(parents=True)
    (root / "results" / STUDY / "rows" / "dddd.json").write_text("local rows")
    c1 = _call(tmp_path, "call1", {"dddd": (9, True), "eeee": (9, True)})
    for tgz in c1.glob("*_runs_*.tgz"):  # finished runs whose folders did not come back
        tgz.unlink()
    res = _unpack(root, c1)
    assert res.returncode == 0, res.stderr
    assert (root / "results" / STUDY / "rows" / "dddd.json").read_text() == "local rows"
    assert json.loads((root / "results" / STUDY / "rows" / "eeee.json").read_text())[0]["tag"] == "call1"


def test_dry_run_changes_nothing(tmp_path):
    root = tmp_path / "repo"
    _run(root, "aaaa", 100, tag="local")
    before = _files(root)
    c1 = _call(tmp_path, "call1", {"aaaa": (300, True), "bbbb": (5, False)})
    res = _unpack(root, c1, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert _files(root) == before
    assert f"{STUDY} aaaa: from call1, step 100 -> 300 finished" in res.stdout


def test_unsafe_members_are_refused(tmp_path):
    for bad in ("../evil.txt", "/tmp/evil.txt", "results/../evil.txt"):
        root = tmp_path / "repo"
        root.mkdir(exist_ok=True)
        call = tmp_path / "bad"
        call.mkdir(exist_ok=True)
        with tarfile.open(call / "st.tgz", "w:gz") as tar:
            data = b"evil"
            info = tarfile.TarInfo(bad)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        res = _unpack(root, call)
        assert res.returncode != 0
        assert "refusing" in res.stderr and bad in res.stderr
        assert list(root.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_a_tarball_that_is_not_a_snapshot_is_skipped(tmp_path):
    # a call's folder also holds its other outputs (a measurement's tarball of "./..." members): skipped, while
    # the snapshots beside it are unpacked
    root = tmp_path / "repo"
    root.mkdir()
    call = _call(tmp_path, "call1", {"aaaa": (300, False)})
    with tarfile.open(call / "measure.tgz", "w:gz") as tar:
        data = b"rows"
        info = tarfile.TarInfo("./sharing/summary.md")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    res = _unpack(root, call)
    assert res.returncode == 0, res.stderr
    assert "skipping" in res.stdout and "measure.tgz" in res.stdout
    assert (root / "results" / STUDY / "runs" / "aaaa" / "progress.json").exists()
    assert not (root / "sharing").exists()


def test_a_bad_call_dir_is_named(tmp_path):
    res = _unpack(tmp_path, tmp_path / "nope")
    assert res.returncode == 2 and "nope" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _unpack(tmp_path, tmp_path / "empty")
    assert res.returncode == 2 and "empty" in res.stderr and "no .tgz" in res.stderr
