"""Issue 14: a damaged row file is never taken for a finished run, the report names what it could not read, rows
from other code are flagged on resume, and configs that cannot run (or would write nonsense) fail before any work."""

import json
import logging
import os

import pytest

from ssmbench.report import write_report
from ssmbench.results import Rows, finished, load_all, read_rows, rows_path, write_rows
from ssmbench.run import RunConfigError, prepare

from .helpers import cli, compose_cfg, tiny_overrides
from .test_report_paper import make_run

TINY_T = tiny_overrides("transformer")


def _row(rid, **kw):
    return {"run_id": rid, "study": "s", "task": "selective_copy", "model": "transformer", "arch": "transformer",
            "layer": "attention", "seed": 0, "eval_len": 32, "train_len": 32, "status": "ok", "accuracy": 0.5,
            "loss": 1.0, "params": 10, "commit": "abc", **kw}


def _write(path, rows):
    write_rows(path, rows)
    return path


# ---- 1. resume only skips a complete file of this run's rows -------------------------------------------------------
DAMAGED = {
    "truncated": lambda rid: json.dumps([_row(rid), _row(rid, eval_len=64)], indent=1)[:-40],
    "empty": lambda rid: "",
    "not json": lambda rid: "\x00\x01garbage",
    "not a list": lambda rid: json.dumps(_row(rid)),
    "a list of numbers": lambda rid: "[1, 2]",
    "no rows": lambda rid: "[]",
    "foreign": lambda rid: json.dumps([_row("0123456789abcdef")]),
    "one foreign row": lambda rid: json.dumps([_row(rid), _row("0123456789abcdef", eval_len=64)]),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_row_file_is_moved_aside_and_the_run_redone(tmp_path, caplog, kind):
    rid = "feedfacefeedface"
    path = rows_path(tmp_path, "s", rid)
    path.parent.mkdir(parents=True)
    path.write_text(DAMAGED[kind](rid))
    with caplog.at_level(logging.WARNING, logger="ssmbench"):
        assert not finished(path, retry_failed=False, current_commit="abc")
    assert not path.exists()
    aside = list(path.parent.glob(f"{rid}.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == DAMAGED[kind](rid)
    assert str(path) in caplog.text and aside[0].name in caplog.text
    assert not load_all(tmp_path / "s")  # the file moved aside is no row file any more


def test_complete_row_file_of_this_run_is_skipped_quietly(tmp_path, caplog):
    rid = "feedfacefeedface"
    path = _write(rows_path(tmp_path, "s", rid), [_row(rid), _row(rid, eval_len=64)])
    with caplog.at_level(logging.INFO, logger="ssmbench"):
        assert finished(path, retry_failed=False, current_commit="abc")
    assert path.exists() and not caplog.text
    failed = _write(rows_path(tmp_path, "s", "f" * 16), [_row("f" * 16, status="oom")])
    assert finished(failed, retry_failed=False, current_commit="abc")
    assert not finished(failed, retry_failed=True, current_commit="abc") and failed.exists()  # redone, kept


# ---- 3. rows written by other code are flagged when resume skips them ---------------------------------------------
def test_skipping_rows_of_another_commit_says_so(tmp_path, caplog):
    rid = "feedfacefeedface"
    path = _write(rows_path(tmp_path, "s", rid), [_row(rid, commit="abc")])
    with caplog.at_level(logging.INFO, logger="ssmbench"):
        assert finished(path, retry_failed=False, current_commit="def")
    assert f"rows of run {rid} come from commit abc; current is def; run with resume=false to redo" in caplog.text
    caplog.clear()
    no_commit = _write(rows_path(tmp_path, "s", "e" * 16), [{k: v for k, v in _row("e" * 16).items()
                                                              if k != "commit"}])
    with caplog.at_level(logging.INFO, logger="ssmbench"):
        assert finished(no_commit, retry_failed=False, current_commit="def")
    assert "come from commit unknown; current is def" in caplog.text


# ---- 1. the report reads the well-formed files and names the others -----------------------------------------------
def test_load_all_and_report_name_the_files_they_cannot_read(tmp_path, caplog):
    good = make_run("mamba", "selective_copy", 0, {32: 0.9, 64: 0.5})
    good = [{**r, "run_id": "a" * 16} for r in good]
    _write(rows_path(tmp_path, "s", "a" * 16), good)
    rows_path(tmp_path, "s", "b" * 16).write_text(json.dumps([_row("b" * 16)])[:-7])  # truncated
    rows_path(tmp_path, "s", "c" * 16).write_text('{"not": "rows"}')
    with caplog.at_level(logging.WARNING, logger="ssmbench"):
        rows = load_all(tmp_path / "s")
    assert isinstance(rows, Rows) and rows == good
    assert [name for name, _ in rows.unreadable] == [f"{'b' * 16}.json", f"{'c' * 16}.json"]
    assert f"{'b' * 16}.json" in caplog.text and f"{'c' * 16}.json" in caplog.text
    with pytest.raises(ValueError, match="b{16}.json"):  # a caller of read_rows learns which file, too
        read_rows(rows_path(tmp_path, "s", "b" * 16))
    text = write_report(tmp_path / "s")
    assert "## Files not read" in text
    section = text.split("## Files not read")[1].split("\n## ")[0]
    assert f"{'b' * 16}.json" in section and f"{'c' * 16}.json" in section and "a" * 16 not in section


def test_report_of_only_unreadable_files_names_them(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "x.json").write_text("[{")
    with pytest.raises(SystemExit, match="x.json"):
        write_report(tmp_path)


def test_resume_end_to_end_flags_another_commit_and_redoes_a_truncated_file(tmp_path):
    args = [*TINY_T, "trainer.steps=4", f"results_root={tmp_path}", "study=s"]
    assert cli(args, cwd=tmp_path).returncode == 0
    [path] = list((tmp_path / "s" / "rows").glob("*.json"))
    rows = json.loads(path.read_text())
    write_rows(path, [{**r, "commit": "0ldc0mm1t"} for r in rows])
    res = cli(args, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "skipping run" in out
    assert f"rows of run {path.stem} come from commit 0ldc0mm1t; current is" in out
    path.write_text(path.read_text()[: len(path.read_text()) // 2])  # a copy cut short
    res = cli(args, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "skipping run" not in out and str(path) in out and "moved to" in out
    assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1
    redone = read_rows(path)
    assert [r["run_id"] for r in redone] == [path.stem] and redone[0]["status"] == "ok"
    assert redone[0]["commit"] != "0ldc0mm1t"


# ---- 2. validation before any work ---------------------------------------------------------------------------------
def _config_error(overrides, tmp_path, root=None):
    with pytest.raises(RunConfigError) as e:
        prepare(compose_cfg([*overrides, f"results_root={root or tmp_path}", "device=cpu"]))
    assert not list(tmp_path.rglob("*.json"))
    return str(e.value)


def test_mamba_ssm_backend_on_cpu_is_a_config_error(tmp_path):
    msg = _config_error([*tiny_overrides("mamba"), "model.layer.scan_backend=mamba_ssm"], tmp_path)
    assert "model.layer.scan_backend=mamba_ssm" in msg and "device=cpu" in msg and "torch" in msg


def test_triton_backend_on_cpu_is_a_config_error_unless_interpreted(tmp_path, monkeypatch):
    over = [*tiny_overrides("mamba"), "model.layer.scan_backend=triton"]
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    msg = _config_error(over, tmp_path)
    assert "model.layer.scan_backend=triton" in msg and "device=cpu" in msg
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the CPU interpreter runs the Triton kernels (the tests use it)
    try:
        import triton  # noqa: F401
    except ImportError:
        return
    prepare(compose_cfg([*over, f"results_root={tmp_path}", "device=cpu"]))


def test_scan_backend_config_error_exits_2_from_the_cli(tmp_path):
    res = cli([*tiny_overrides("mamba"), "model.layer.scan_backend=mamba_ssm", "device=cpu",
               f"results_root={tmp_path}"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "model.layer.scan_backend=mamba_ssm" in res.stderr
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("model, key, value, users", [
    ("transformer", "expand", 4, "mamba"),
    ("transformer", "d_conv", 3, "mamba"),
    ("lstm", "shift_d_state", 8, "h3"),
    ("mamba", "mlp_ratio", 2, "rnn, transformer"),
    ("mamba", "shift_d_state", 8, "h3"),
    ("h3", "expand", 3, "mamba"),
    ("s4", "mlp_ratio", 0, "rnn, transformer"),  # the no-gate block uses none of them
])
def test_block_key_the_model_does_not_use_is_a_config_error(tmp_path, model, key, value, users):
    msg = _config_error([*tiny_overrides(model), f"model.{key}={value}"], tmp_path)
    arch = compose_cfg([f"model={model}"]).model.arch
    assert f"model.{key}={value} is not used by arch={arch} (used by: {users})" in msg


@pytest.mark.parametrize("model, over", [
    ("transformer", ["model.expand=2", "model.d_conv=4", "model.shift_d_state=4"]),  # defaults: accepted
    ("transformer", ["model.mlp_ratio=0"]),
    ("lstm", ["model.mlp_ratio=2"]),
    ("mamba", ["model.expand=4", "model.d_conv=3", "model.mlp_ratio=4"]),
    ("h3", ["model.shift_d_state=8"]),
])
def test_block_keys_a_model_uses_or_left_at_default_are_accepted(tmp_path, model, over):
    prepare(compose_cfg([*tiny_overrides(model), *over, f"results_root={tmp_path}", "device=cpu"]))


def test_duplicate_eval_lengths_are_a_config_error(tmp_path):
    msg = _config_error([*TINY_T, "eval.lengths=[32,64,32]"], tmp_path)
    assert "eval.lengths" in msg and "32" in msg
    p = prepare(compose_cfg([*TINY_T, "eval.lengths=[32,64]", f"results_root={tmp_path}", "device=cpu"]))
    assert p.eval_lengths == [32, 64]


@pytest.mark.parametrize("study", ["../..", "..", "a/../../b", "/tmp/elsewhere", "", "."])
def test_study_that_leaves_results_root_is_a_config_error(tmp_path, study):
    msg = _config_error([*TINY_T, f"study='{study}'"], tmp_path, root=tmp_path / "r")
    assert "study=" in msg and repr(study) in msg
    assert not any(tmp_path.rglob("*"))


@pytest.mark.parametrize("study", ["demo", "sweeps/a", "a/../b"])
def test_study_inside_results_root_is_accepted_and_prepare_leaves_nothing(tmp_path, study):
    prepare(compose_cfg([*TINY_T, f"study={study}", f"results_root={tmp_path / 'r'}", "device=cpu"]))
    assert not any(tmp_path.iterdir())  # the check writes a probe file where the folder would go, then removes it


def test_unwritable_results_path_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    msg = _config_error(TINY_T, tmp_path, root=tmp_path / "file" / "r")
    assert "results_root=" in msg and "not a folder" in msg
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "rows").write_text("a file where the rows folder goes")
    msg = _config_error([*TINY_T, "study=s"], tmp_path)
    assert "results_root=" in msg and str(tmp_path / "s" / "rows") in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_read_only_results_folder_is_a_config_error(tmp_path):
    rows = tmp_path / "s" / "rows"
    rows.mkdir(parents=True)
    rows.chmod(0o500)
    try:
        msg = _config_error([*TINY_T, "study=s"], tmp_path)
    finally:
        rows.chmod(0o700)
    assert "results_root=" in msg and "cannot create a file" in msg


def test_unwritable_rows_folder_fails_the_cli_before_training(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "rows").write_text("a file where the rows folder goes")
    res = cli([*TINY_T, f"results_root={tmp_path}", "study=s"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "results_root=" in res.stderr
    assert not (tmp_path / "s" / "runs").exists()
