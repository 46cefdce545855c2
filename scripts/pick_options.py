"""Which kernel options (kernels/common/options.py) beat the defaults in a step_options measurement, as shell
exports for the rest of a GPU call:

    eval "$(python scripts/pick_options.py OUT/step_options/rows)"

Reads the rows `ssmbench-trainbench` wrote for stage step_options of gpu_profile_all.sh: one row per (experiment,
model) and option setting. A setting that differs from the defaults' rows in exactly one option is that option's
alternative; it is picked when it is faster by more than --margin on at least one model and slower by more than
the margin on none (the options change how a layer computes, not what, so a layer it does not touch times alike).
Every verdict is printed to stderr; stdout holds only the exports. Changing a default in the code is a separate,
committed decision (results/training/README.md); this only lets the same call train with what it just measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ssmbench.kernels.common.options import OPTIONS, _parse  # noqa: E402  (after the path is set)


def load_rows(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("*.json")):
        data = json.loads(f.read_text())
        rows += data if isinstance(data, list) else [data]
    return [r for r in rows if "ms_per_step" in r and "error" not in r and r.get("finite_loss", True)]


def verdicts(rows: list[dict], margin: float) -> list[tuple[str, str, str, dict]]:
    """(option variable, value, 'pick' | 'keep', {experiment/model: ratio}) per single-option alternative."""
    defaults = {name.removeprefix("SSMBENCH_").lower(): values[0] for name, values in OPTIONS.items()}
    base = {(r["experiment"], r["model"]): r["ms_per_step"] for r in rows if _parse(r["kernel_options"]) == defaults}
    alternatives: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        changed = {k: v for k, v in _parse(r["kernel_options"]).items() if defaults.get(k) != v}
        key = (r["experiment"], r["model"])
        if len(changed) == 1 and key in base:
            (name, value), = changed.items()
            alternatives.setdefault((name, value), {})[f"{key[0]}/{key[1]}"] = r["ms_per_step"] / base[key]
    out = []
    for (name, value), ratios in sorted(alternatives.items()):
        faster = any(q < 1 - margin for q in ratios.values())
        slower = any(q > 1 + margin for q in ratios.values())
        out.append((f"SSMBENCH_{name.upper()}", value, "pick" if faster and not slower else "keep", ratios))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=Path, help="the step_options rows folder")
    ap.add_argument("--margin", type=float, default=0.01, help="relative change that counts (default 1%%)")
    args = ap.parse_args(argv)
    if not args.rows.is_dir():
        ap.error(f"{args.rows} is not a folder of step_options rows")
    for var, value, verdict, ratios in verdicts(load_rows(args.rows), args.margin):
        detail = ", ".join(f"{k} {q:.3f}x" for k, q in sorted(ratios.items()))
        print(f"# {verdict} {var}={value}: {detail}", file=sys.stderr)
        if verdict == "pick":
            print(f"export {var}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
