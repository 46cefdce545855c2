"""`ssmbench-explain`: the figures of docs/explain.md, from fresh models or one kept trained model (Hydra app).

    ssmbench-explain                                  # fresh models, CPU -> results/explain/fresh/
    ssmbench-explain name=trained model_path=results/demo/runs/<run_id>/model.pt
    ssmbench-explain 'figures=[2_selectivity,3b_attention]' models.mamba.d_model=32
    ssmbench-explain explain=tiny out_root=/tmp/x     # toy sizes (seconds)

Writes <out_root>/<name>/<figure>.png (200 dpi) and .pdf, and captions.md (one caption per figure, with the
numbers it computed). A kept model takes the role of the fresh model with the same sequence layer (s6: mamba,
s4: s4, rnn: lstm, attention: transformer); the others stay fresh, and every caption says which is which.
Everything runs on the CPU. Without the console script: `python -m ssmbench.explain.app [overrides...]`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Callable

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from .common import Drawn, Setting, make_setting
from .config import ExplainConfig, ExplainConfigError, register_explain_configs, validate
from .memory import attention_figure, state_norms_figure
from .scan import scan_memory_figure, scan_order_figure
from .selectivity import selectivity_figure
from .ssm import hippo_figure, s4_views_figure, zoh_figure

log = logging.getLogger("ssmbench.explain")
register_explain_configs()

DRAW: dict[str, Callable[[Setting, Path], Drawn]] = {
    "1a_hippo": hippo_figure,
    "1b_s4_two_views": s4_views_figure,
    "1c_zoh": zoh_figure,
    "2_selectivity": selectivity_figure,
    "3a_state_norms": state_norms_figure,
    "3b_attention": attention_figure,
    "4a_scan_order": scan_order_figure,
    "4b_scan_memory": scan_memory_figure,
}


def write_captions(out: Path, drawn: list[Drawn], setting: Setting, command: str) -> Path:
    lines = [f"# Figures: {setting.cfg.name}", "",
             f"Made by `{command}` (torch {torch.__version__}, CPU, {setting.cfg.threads} thread(s)). Models: "
             + "; ".join(f"{m.name} ({role}): {m.provenance}" for role, m in setting.models.items()) + ".", ""]
    for d in drawn:
        lines += [f"## {d.key}: {d.title}", "", f"![{d.key}]({d.png.name})", "", d.caption, ""]
    path = out / "captions.md"
    path.write_text("\n".join(lines))
    return path


def run_explain(cfg: ExplainConfig, command: str = "ssmbench-explain") -> list[Drawn]:
    """Draw the figures `cfg.figures` (in the guide's order) into <out_root>/<name>/; returns what was drawn."""
    validate(cfg)
    torch.set_num_threads(cfg.threads)
    setting = make_setting(cfg)
    out = Path(cfg.out_root) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for key in DRAW:
        if key not in cfg.figures:
            continue
        t0 = time.perf_counter()
        drawn.append(DRAW[key](setting, out))
        log.info("%s: %s (%.1f s)", key, drawn[-1].png, time.perf_counter() - t0)
    path = write_captions(out, drawn, setting, command)
    log.info("captions: %s", path)
    return drawn


def _command() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:
        overrides = []
    return " ".join(["ssmbench-explain", *overrides])


@hydra.main(version_base="1.3", config_path="pkg://ssmbench.conf", config_name="explain")
def _app(cfg: DictConfig) -> None:
    obj: ExplainConfig = OmegaConf.to_object(cfg)
    try:
        run_explain(obj, _command())
    except ExplainConfigError as e:
        print(f"ssmbench-explain: config error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
