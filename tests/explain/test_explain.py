"""ssmbench-explain: the app at toy sizes writes every figure (PNG + PDF) and a caption for each; a kept model takes
its role and the captions say it is trained; bad keys fail naming the key; the scan diagram computes the same
h as the sequential loop; the memory tracker counts what is made, not what was there."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import ssmbench.plots
from ssmbench.checkpoint import save_model
from ssmbench.explain import scan
from ssmbench.explain.app import DRAW, run_explain
from ssmbench.explain.config import FIGURES, ExplainConfigError, register_explain_configs
from ssmbench.models.lm import LanguageModel, ModelConfig


def explain_cfg(overrides: list[str]):
    register_explain_configs()
    with initialize_config_module(config_module="ssmbench.conf", version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="explain", overrides=overrides))


@pytest.fixture
def low_dpi(monkeypatch):
    # The drawing is what is tested, not the resolution: 200 dpi PNGs would triple the test's time.
    monkeypatch.setattr(ssmbench.plots, "DPI", 30)


def test_every_figure_and_caption_at_tiny_sizes(tmp_path, low_dpi):
    cfg = explain_cfg(["explain=tiny", f"out_root={tmp_path}", "name=t"])
    drawn = run_explain(cfg)
    out = tmp_path / "t"
    assert [d.key for d in drawn] == list(FIGURES) == list(DRAW)
    captions = (out / "captions.md").read_text()
    for key in FIGURES:
        assert (out / f"{key}.png").stat().st_size > 1000 and (out / f"{key}.pdf").stat().st_size > 1000
        assert f"## {key}:" in captions and f"]({key}.png)" in captions
    assert captions.count("fresh, random initialisation with seed 0") >= 4 and "trained," not in captions
    # numbers computed, not asserted: S4's two views agree to fp32 rounding, the scans to float64 rounding
    diff = float(re.search(r"max abs difference over all \d+ outputs: ([0-9.e+-]+)", captions).group(1))
    assert diff < 1e-4
    assert "fresh, untrained model" in captions


def test_kept_model_takes_its_role(tmp_path, low_dpi):
    model_cfg = ModelConfig(name="mamba", arch="mamba", layer={"name": "s6", "d_state": 4}, d_model=8, n_layers=1)
    torch.manual_seed(1)
    model = LanguageModel(model_cfg, 10)
    task = {"_target_": "ssmbench.tasks.SelectiveCopying", "name": "selective_copy", "seq_len": 20, "vocab_size": 10,
            "n_data": 3, "selective": True}
    path = save_model(tmp_path / "run", model, {"run_id": "abc", "model_cfg": dataclasses.asdict(model_cfg),
                                                "task": task, "vocab_size": 10, "seed": 0, "steps": 7})
    cfg = explain_cfg(["explain=tiny", f"out_root={tmp_path}", "name=k", f"model_path={path}",
                       "figures=[2_selectivity,3a_state_norms]"])
    run_explain(cfg)
    captions = (tmp_path / "k" / "captions.md").read_text()
    assert f"trained, {path}, run abc, 7 steps on selective_copy at L=20" in captions
    assert "a trained model" in captions and "3 data tokens" in captions  # the kept task's own layout
    # Delta measured on the data tokens and on the noise right after them, each against the other noise
    m = re.search(r"mean Delta (\S+) on data tokens and (\S+) on the noise token right after one, vs (\S+) on the "
                  r"other noise \(ratios (\S+) and (\S+)\)", captions)
    assert m, captions
    on, after, rest, r_on, r_after = (float(v) for v in m.groups())
    assert abs(on / rest - r_on) <= 0.01 * r_on and abs(after / rest - r_after) <= 0.01 * r_after
    assert sorted(p.name for p in (tmp_path / "k").glob("*.png")) == ["2_selectivity.png", "3a_state_norms.png"]


def test_bad_keys_and_values_name_the_key(tmp_path):
    for override, key in [("scan.lenghts=[64]", "scan.lenghts"), ("models.mamba.d_modl=3", "models.mamba.d_modl"),
                          ("seed=zero", "seed")]:
        with pytest.raises(ConfigCompositionException, match=re.escape(key)):
            explain_cfg([override])
    for override, key in [("figures=[5_nothing]", "figures"), ("scan.diagram_len=6", "scan.diagram_len"),
                          ("models.mamba.layer.d_state=0", "models.mamba")]:
        with pytest.raises(ExplainConfigError, match=re.escape(key)):
            run_explain(explain_cfg(["explain=tiny", f"out_root={tmp_path}", override]))


@pytest.mark.parametrize("L", [2, 8, 16])
@pytest.mark.parametrize("name", list(scan.SCHEDULES))
def test_scan_diagram_computes_the_sequential_scan(name, L):
    a, b = scan.example_steps(L, seed=L)
    rec = scan.run_scan(name, a, b)
    np.testing.assert_allclose(rec.h, scan.sequential_h(a, b), rtol=1e-12, atol=1e-12)
    assert [(s.first, s.last) for s in rec.rows[-1]] == [(0, t) for t in range(L)]
    # every combine joins adjacent segments, and no slot is written twice in one round
    for r in range(1, rec.rounds + 1):
        outs = [c.right for c in rec.combines if c.round == r]
        assert len(outs) == len(set(outs)) > 0
    expected_rounds = {"sequential loop": L - 1, "Hillis-Steele (doubling)": int(np.log2(L)),
                       "work-efficient (Blelloch up-sweep, down-sweep)": max(1, 2 * int(np.log2(L)) - 1)}[name]
    assert rec.rounds == expected_rounds
    if name.startswith("work-efficient"):
        assert len(rec.combines) == 2 * L - int(np.log2(L)) - 2


def test_memory_tracker_counts_what_is_made():
    x = torch.zeros(1024)  # 4 KiB made before: not counted, nor are views of it
    with scan.PeakTensorMemory() as mem:
        v = x[:512]
        y = v + 1  # 2 KiB
        z = torch.cat([y, y])  # 4 KiB
        del y, z
        w = torch.ones(256)  # 1 KiB, after the others were freed
    assert mem.peak == 6 * 1024 and mem.live == 1024
    del v, w


def test_recomputing_scan_matches_and_keeps_less():
    x = scan.mamba_scan_inputs(1, 4, 4, 256, seed=0)
    peaks, outs = {}, {}
    for name in scan.VARIANTS:
        if not name.startswith("reference"):
            peaks[name], y, grads = scan.measure(name, x, chunk=16)
            outs[name] = (y, grads)
    (y0, g0), (y1, g1) = outs.values()
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch_peak, recompute_peak = peaks.values()
    assert recompute_peak < torch_peak / 2
