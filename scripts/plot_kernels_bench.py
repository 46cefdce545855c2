"""Plot a bench_kernels.py table: time against length for the paper configuration, the fused scan against the
official kernel's reference times, causal FlashAttention-2 and the "torch" scan, forward and forward+backward.

    python scripts/plot_kernels_bench.py results/kernels     # reads kernels_bench.csv, writes plots/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def long_form(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (pass, L, implementation) with its median ms."""
    paper = df[(df["section"] == "paper") & (df["op"] == "triton_scan")]
    cols = {"ms": "fused Triton scan", "official_ms": "official mamba_ssm (reference csv)",
            "flash_ms": "causal FA2 (SDPA flash)", "torch_ms": '"torch" scan'}
    out = []
    for col, name in cols.items():
        if col not in paper:
            continue
        part = paper[["pass_", "L", col]].rename(columns={col: "ms"})
        part = part[pd.to_numeric(part["ms"], errors="coerce").notna()].astype({"ms": float})
        out.append(part.assign(implementation=name))
    return pd.concat(out, ignore_index=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    df = pd.read_csv(args.folder / "kernels_bench.csv")
    env = json.loads((args.folder / "env.json").read_text())
    data = long_form(df)
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (pass_, title) in zip(axes, [("fwd", "forward"), ("fwdbwd", "forward + backward")]):
        sns.lineplot(data=data[data["pass_"] == pass_], x="L", y="ms", hue="implementation", marker="o", ax=ax)
        ax.set(xscale="log", yscale="log", title=f"{title}: batch 1, dim 1024, N 16, bf16", xlabel="L",
               ylabel="median ms")
        ax.set_xscale("log", base=2)
    fig.suptitle(f"{env['gpu']}, triton {env['triton']}, torch {env['torch']}, commit {env.get('commit', '?')}")
    fig.tight_layout()
    out = args.folder / "plots"
    out.mkdir(exist_ok=True)
    fig.savefig(out / "time_vs_length.png", dpi=120)
    print(f"wrote {out / 'time_vs_length.png'}")


if __name__ == "__main__":
    main()
