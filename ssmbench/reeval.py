"""`ssmbench-eval RUN_DIR [key=value ...]`: test a kept model at new lengths, without training again.

    ssmbench-eval results/induction/runs/3f2a9c0d1e2b4a5c eval.lengths=[512,1024,2048] device=cuda

The run's folder holds `model.pt` (written when the run finished, unless save_model=false). Each length is
evaluated on the same held-out data a run evaluating that length at the end of training would have seen, and its
row goes into the run's row file: added if the length is new, replaced if it was there. Keys: eval.lengths,
eval.batch_size, eval.batches, eval.max_tokens, device.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from .checkpoint import MODEL, load_kept_model
from .env import environment
from .evaluate import autocast_factory, evaluate_length
from .results import read_rows, write_rows
from .run import RunConfigError, build_task, eval_generator_seed, resolve_device

log = logging.getLogger("ssmbench")
ALLOWED_KEYS = ("eval.lengths", "eval.batch_size", "eval.batches", "eval.max_tokens", "eval.time_budget_s", "device")


def rows_file_of(run_folder: Path, run_id: str) -> Path:
    """runs/<id>/ sits beside rows/ in the study folder."""
    return run_folder.parent.parent / "rows" / f"{run_id}.json"


def parse_overrides(overrides: list[str]):
    for o in overrides:
        key = o.split("=", 1)[0]
        if "=" not in o or key not in ALLOWED_KEYS:
            raise RunConfigError(f"ssmbench-eval: {o!r} is not key=value with a key among {ALLOWED_KEYS}")
    return OmegaConf.from_dotlist(overrides)


def evaluate_kept(run_folder: str | Path, overrides: list[str]) -> list[dict[str, Any]]:
    run_folder = Path(run_folder)
    changes = parse_overrides(overrides)
    kept, model = load_kept_model(run_folder / MODEL)
    cfg = OmegaConf.merge(OmegaConf.create(kept["config"]), changes)
    lengths = [int(L) for L in cfg.eval.lengths] or [int(cfg.task.seq_len)]
    if any(L <= 0 for L in lengths):
        raise RunConfigError(f"eval.lengths must be positive, got {lengths}")
    device = resolve_device(cfg.device)
    task, _ = build_task(cfg.task)
    model.to(device)
    precision = kept["precision"] if device.type == "cuda" else "fp32"  # no bf16 autocast on the CPU
    autocast = autocast_factory(device, precision)
    path = rows_file_of(run_folder, kept["run_id"])
    existing = read_rows(path) if path.exists() else []
    base = {k: v for k, v in existing[0].items() if not k.startswith("eval") and k not in
            ("status", "error", "accuracy", "loss")} if existing else {"run_id": kept["run_id"]}
    # `precision` stays the training's (it is part of the run's configuration); eval_precision is this evaluation's
    stamp = {"evaluated_by": "ssmbench-eval", "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
             "eval_precision": precision,
             **{f"eval_{k}": v for k, v in environment(device).items()}}
    new_rows = []
    for L in lengths:
        g = torch.Generator(device=device).manual_seed(eval_generator_seed(kept["seed"], L))
        ev = evaluate_length(model, task, L, g, cfg.eval.batches, cfg.eval.batch_size, cfg.eval.max_tokens,
                             device, autocast, cfg.eval.get("time_budget_s"))
        new_rows.append({**base, **ev, **stamp})
        log.info("%s L=%d: status=%s accuracy=%.4f", base.get("model", kept["model_cfg"]["name"]), L, ev["status"],
                 ev["accuracy"])
    by_len = {r.get("eval_len"): r for r in existing}
    by_len.update({r["eval_len"]: r for r in new_rows})
    write_rows(path, sorted(by_len.values(), key=lambda r: r.get("eval_len") or 0))
    log.info("rows written to %s", path)
    return new_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ssmbench-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run's folder: <results_root>/<study>/runs/<run_id>")
    parser.add_argument("overrides", nargs="*", help=f"key=value with keys among {ALLOWED_KEYS}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s")
    try:
        evaluate_kept(args.run_dir, args.overrides)
    except (RunConfigError, ValueError, FileNotFoundError) as e:
        raise SystemExit(f"ssmbench-eval: {e}") from e


if __name__ == "__main__":
    main()
