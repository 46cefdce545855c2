"""scripts/pick_options.py: an option is taken for the rest of a GPU call only where it measured faster on some
model and slower on none."""

import json

from .helpers import load_script


def _load():
    return load_script("pick_options")


def test_picks_only_an_option_that_helps_somewhere_and_hurts_nowhere(tmp_path, capsys):
    from ssmbench.kernels.common.options import DEFAULT
    mod = _load()
    legacy_norm = DEFAULT.replace("rmsnorm=triton", "rmsnorm=torch")
    blh = DEFAULT.replace("fftconv=bhl", "fftconv=blh")  # the non-default layout
    rows = []
    for model, base, with_blh, with_torch_norm in (("h3", 10.0, 8.0, 11.0), ("mamba", 9.0, 9.02, 10.0)):
        for opts, ms in ((DEFAULT, base), (blh, with_blh), (legacy_norm, with_torch_norm)):
            rows.append({"experiment": "table1", "model": model, "ms_per_step": ms, "kernel_options": opts,
                         "finite_loss": True})
    rows.append({"experiment": "table1", "model": "s4", "error": "ValueError: ...", "kernel_options": blh})
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert mod.main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == "export SSMBENCH_FFTCONV=blh\n"
    assert "keep SSMBENCH_RMSNORM=torch" in err and "table1/h3 0.800x" in err
