"""scripts/gpu_tree.py: parking the other studies' .pt files shrinks the tree a GPU call copies, keeps the named
studies' files, and restore puts every byte back; neither step overwrites or loses a file."""

import subprocess
from pathlib import Path

from .helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_tree.py"


def _module():
    return load_script("gpu_tree")


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    files = {"results/table1/runs/a/checkpoint.pt": b"A" * 3000, "results/induction/runs/b/model.pt": b"B" * 5000,
             "results/induction/rows/b.json": b"{}", "results/probes/runs/c/model.pt": b"C" * 7000,
             "ssmbench/x.py": b"x = 1\n"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".gitignore").write_text("checkpoint.pt\n.gpu_stash/\n")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(git + ["add", "-A"], cwd=root, check=True)
    subprocess.run(git + ["add", "-f", "results/table1/runs/a/checkpoint.pt"], cwd=root, check=True)
    subprocess.run(git + ["commit", "-qm", "t"], cwd=root, check=True)
    return root


def test_stash_keeps_named_studies_and_restore_puts_everything_back(tmp_path):
    mod = _module()
    root = _repo(tmp_path)
    before = mod.tree_bytes(root)
    assert mod.main(["stash", "table1"], root=root) == 0
    assert (root / "results/table1/runs/a/checkpoint.pt").exists()  # the study being trained stays
    assert not (root / "results/induction/runs/b/model.pt").exists()
    assert not (root / "results/probes/runs/c/model.pt").exists()
    assert (root / "results/induction/rows/b.json").exists()  # only .pt files are parked
    assert mod.tree_bytes(root) == before - 12000  # the parked files are not copied (the stash is ignored)
    assert mod.main(["stash", "table1"], root=root) == 1  # twice in a row would mix two parkings
    assert mod.main(["restore"], root=root) == 0
    assert (root / "results/probes/runs/c/model.pt").read_bytes() == b"C" * 7000
    assert (root / "results/induction/runs/b/model.pt").read_bytes() == b"B" * 5000
    assert not (root / ".gpu_stash").exists()
    assert mod.tree_bytes(root) == before


def test_a_kept_study_parks_its_finished_runs_models_and_keeps_the_unfinished_runs_files(tmp_path):
    # induction's run b has rows (finished: a call skips it); run d has none (paused: its files go along)
    mod = _module()
    root = _repo(tmp_path)
    more = {"results/induction/runs/d/model.pt": b"D" * 900, "results/induction/runs/b/extra.pt": b"E"}
    for rel, data in more.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["add", "-A"], cwd=root, check=True)
    subprocess.run(git + ["commit", "-qm", "more"], cwd=root, check=True)
    assert mod.main(["stash", "table1", "induction"], root=root) == 0
    assert not (root / "results/induction/runs/b/model.pt").exists()  # finished: parked
    assert (root / "results/induction/runs/d/model.pt").exists()  # no rows: stays
    assert (root / "results/induction/runs/b/extra.pt").exists()  # only a finished run's model.pt is parked
    assert (root / "results/table1/runs/a/checkpoint.pt").exists()
    assert mod.main(["restore"], root=root) == 0
    assert (root / "results/induction/runs/b/model.pt").read_bytes() == b"B" * 5000


def test_restore_never_overwrites_a_file_back_in_the_tree(tmp_path):
    mod = _module()
    root = _repo(tmp_path)
    mod.main(["stash"], root=root)
    (root / "results/probes/runs/c/model.pt").write_bytes(b"new")
    assert mod.main(["restore"], root=root) == 1
    assert (root / "results/probes/runs/c/model.pt").read_bytes() == b"new"
    assert (root / ".gpu_stash/results/probes/runs/c/model.pt").read_bytes() == b"C" * 7000


def test_stash_names_an_unknown_study(tmp_path, capsys):
    mod = _module()
    root = _repo(tmp_path)
    assert mod.main(["stash", "tabel1"], root=root) == 1
    assert "results/tabel1" in capsys.readouterr().err
    assert (root / "results/probes/runs/c/model.pt").exists()  # nothing moved
