"""ssmbench-trainbench with several processes sharing a GPU: tags, the start barrier, the summary's ratios."""

import json
import threading

import pytest

from ssmbench.perf.training import sharing_of, summarize, wait_at_barrier


def test_tags_name_the_sharing():
    assert sharing_of("k8-p3-mps") == (8, "MPS")
    assert sharing_of("k2-p0") == (2, "time-sliced")
    assert sharing_of("") == (1, "alone") and sharing_of("solo") == (1, "alone")


def test_barrier_releases_all_parties_together_and_times_out_alone(tmp_path):
    done = []
    threads = [threading.Thread(target=lambda i=i: (wait_at_barrier(tmp_path, "x", f"k3-p{i}", 3), done.append(i)))
               for i in range(3)]
    for t in threads[:2]:
        t.start()
    threads[0].join(0.3)
    assert done == []  # two of three are ready: nobody starts timing
    threads[2].start()
    for t in threads:
        t.join(5)
    assert sorted(done) == [0, 1, 2]
    with pytest.raises(TimeoutError, match="2 processes expected for y, 1 came"):
        wait_at_barrier(tmp_path, "y", "k2-p0", 2, timeout_s=0.2)


def _row(tag, ms):
    return {"experiment": "induction", "model": "mamba", "mode_asked": "graphs", "tag": tag, "ms_per_step": ms,
            "device": "gpu", "torch": "2", "triton": "3", "commit": "abc", "step_mode_reason": ""}


def test_summary_sets_shared_runs_beside_the_run_alone(tmp_path):
    rows = [_row("", 1.0)] + [_row(f"k4-p{i}", 4.0) for i in range(4)] + [_row(f"k4-p{i}-mps", 1.5) for i in range(4)]
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "all.json").write_text(json.dumps(rows))
    text = summarize(tmp_path)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines()
             if line.startswith("| induction")]
    by_sharing = {c[3]: c for c in cells}
    assert set(by_sharing) == {"MPS", "time-sliced"}
    assert by_sharing["MPS"][-1] == "1.5" and by_sharing["time-sliced"][-1] == "4"  # wall of 4 runs / one run


def test_ensemble_rows_time_k_seeds_in_one_step_beside_the_solo_step(tmp_path, capsys):
    # CPU smoke: a tiny induction model, one timed step each; the numbers mean nothing here, the plumbing does.
    from ssmbench.perf.training import main

    tiny = ["device=cpu", "model.d_model=8", "model.n_layers=1", "task.seq_len=16", "trainer.batch_size=2",
            "model.layer.d_state=4"]
    main(["--experiments", "induction", "--models", "mamba", "--modes", "eager", "--ensemble", "2", "--steps", "1",
          "--warmup", "1", "--repeats", "1", "--out", str(tmp_path / "rows"), "--override", *tiny])
    rows = json.loads((tmp_path / "rows" / "solo.json").read_text())
    by_mode = {r["mode_asked"]: r for r in rows}
    assert set(by_mode) == {"eager", "ensemble"} and not any("error" in r for r in rows), rows
    ens = by_mode["ensemble"]
    assert ens["ensemble_k"] == 2 and ens["finite_loss"]
    assert abs(ens["ms_per_member_step"] - ens["ms_per_step"] / 2) < 1e-9
    assert by_mode["eager"]["ms_per_member_step"] == by_mode["eager"]["ms_per_step"]
    text = summarize(tmp_path)
    assert "## Batched ensemble (k = 2 seeds in one step): ms per member-step" in text
    assert "eager / ensemble" in text


def test_summary_gives_each_setting_tag_its_ratio_to_the_defaults(tmp_path):
    # stage step_options tags its rows by the option changed (and `defaults`); stage compile by compile-<mode>
    rows = [_row("defaults", 10.0), _row("SSMBENCH_FFTCONV-bhl", 8.0), _row("compile-none", 10.0),
            _row("compile-default", 9.0), _row("k2-p0", 20.0)]
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "all.json").write_text(json.dumps(rows))
    text = summarize(tmp_path)
    ratios = {}
    for section in text.split("## ")[1:]:
        title = section.splitlines()[0]
        for line in section.splitlines():
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if title.startswith("Ratio") and cells and cells[0] not in ("tag", "") and not cells[0].startswith(":"):
                ratios[cells[0]] = float(cells[1])
    assert ratios == {"SSMBENCH_FFTCONV-bhl": 0.8, "defaults": 1.0, "compile-default": 0.9, "compile-none": 1.0}
    assert "k2-p0" not in text.split("## k processes")[0]  # a sharing tag is not a setting


def test_summary_draws_the_step_times_and_the_settings_ratios(tmp_path):
    solo = [{**_row("", ms), "mode_asked": mode, "model": model}
            for model, mode, ms in (("mamba", "eager", 8.0), ("mamba", "graphs", 0.6), ("h3", "graphs", 1.0))]
    tagged = [_row("defaults", 10.0), _row("SSMBENCH_FFTCONV-bhl+SSMBENCH_SHIFT-torch", 8.0)]
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "all.json").write_text(json.dumps(solo + tagged))
    text = summarize(tmp_path)
    assert "![step_time](plots/step_time.png)" in text and "![settings_ratio](plots/settings_ratio.png)" in text
    for name in ("step_time", "settings_ratio"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    from ssmbench.perf.training_plots import _setting_label
    assert _setting_label("SSMBENCH_FFTCONV-bhl+SSMBENCH_SHIFT-torch  (/ defaults)") == \
        "FFTCONV=bhl, SHIFT=torch\n(against defaults)"


def test_a_summary_without_solo_or_setting_rows_draws_nothing(tmp_path):
    rows = [_row(f"k2-p{i}", 2.0) for i in range(2)]
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "all.json").write_text(json.dumps(rows))
    assert "## Plots" not in summarize(tmp_path)
    assert not (tmp_path / "plots").exists()
