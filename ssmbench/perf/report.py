"""Reports for the profiler's folders: kernel timings, decode throughput, generator overhead.

    ssmbench-profile-report results/kernels [--official ssmbench/reference/h200_official_kernels.csv]
    ssmbench-profile-report results/kernel_targets
    ssmbench-profile-report results/generation
    ssmbench-profile-report results/generators
    ssmbench-profile-report results/scan_sweeps      # rows of scripts/scan_sweeps.py

Each folder gets rows.csv (every row, flat), summary.md (the tables below, failures, environment),
environment.json and plots/. Which report is written follows the rows' `kind`.

Kernels: per shape and dtype, a table of median times (ms) by sequence length, one column per implementation
(op:backend), for each pass; the speed-up of the fused scan (selective_scan:triton) over every other
implementation (other time / fused time, same run, same length); achieved bandwidth as a fraction of the copy
bandwidth measured in the same run; and a log-log plot of time against length, one line per implementation
(the Mamba paper's Figure 8, left). With --official (or the profile config's official_csv), timings measured
elsewhere (the official mamba_ssm kernel, SDPA) are joined where the shape matches, marked "(ref csv)". Where
the scan rows carry the official kernel's time (official_ms, perf/official.py), the summary opens with the
targets table: the fused scan against it at every point, its source, and causal SDPA FlashAttention beside them.
Kernel sweeps (scripts/scan_sweeps.py): one table per section.
Generation: tokens/s and peak memory by batch for each model and mode, the Mamba/Transformer throughput ratio,
the largest batch each model ran and where the Transformer's KV cache stopped fitting; plots of throughput and
memory against batch (the paper's Figure 8, right). Generators: generator time as a share of a training step.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from ssmbench.plots import model_colour, save_figure
from ssmbench.results import load_all

from .official import read_official_csv

FUSED = "selective_scan:triton"
BAND = ("time_ms", "time_p20_ms", "time_p80_ms")


def _fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _length_label(L: int) -> str:
    k = int(round(math.log2(L))) if L > 0 else 0
    return f"2^{k}" if 2 ** k == L else str(L)


def _forced(r) -> bool | None:
    """The row's forced long-sequence path (True/False), or None where the heuristic chose (or the column is
    absent or empty)."""
    v = r.get("long_sequence")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)


def _shape_key(r) -> str:
    key = f"B={int(r['batch'])}, D={int(r['dim'])}, N={int(r['d_state'])}, {r['dtype']}"
    forced = _forced(r)
    return key if forced is None else f"{key}, long-sequence path {'forced on' if forced else 'off'}"


def _shape_slug(r) -> str:
    slug = f"B{int(r['batch'])}_D{int(r['dim'])}_N{int(r['d_state'])}_{r['dtype']}"
    forced = _forced(r)
    return slug if forced is None else f"{slug}_{'long' if forced else 'plain'}"


# ---------------------------------------------------------------------------------------------------------------
# Kernels

def official_rows(path: str | Path, df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the kernel schema from a reference CSV (read by perf/official.py: op,B,D,L,N,gated_z,fwd_ms,
    fwdbwd_ms), labelled "<op:backend> (ref csv)" and restricted to the shapes and dtypes present in df. Gated
    scan rows are used when the profile gated the scan."""
    gated = bool(df["gated"].iloc[0]) if "gated" in df else True
    out = []
    for r in read_official_csv(path):
        if r["gated"] is not None and r["gated"] != gated:
            continue
        out.append({"kind": "kernel", "impl": f"{r['impl']} (ref csv)", "op": r["op"], "backend": "reference_csv",
                    "pass": r["pass"], "batch": r["batch"], "dim": r["dim"], "seq_len": r["seq_len"],
                    "dtype": r["dtype"], "status": "ok", "time_ms": r["time_ms"], "source": r["source"]})
    if not out:
        return pd.DataFrame()
    off = pd.DataFrame(out)
    shapes = df[[c for c in ("batch", "dim", "dtype", "d_state", "long_sequence") if c in df]].drop_duplicates()
    # N (and a forced long-sequence path) come from the profile's shapes: ref rows join each of them (N=16 there)
    off = off.merge(shapes, on=["batch", "dim", "dtype"])
    return off


def _point(r) -> tuple:
    return (int(r["batch"]), int(r["dim"]), int(r["d_state"]), r["dtype"], int(r["seq_len"]), r["pass"])


def targets_table(df: pd.DataFrame) -> pd.DataFrame:
    """The fused scan at every point where its rows carry the official kernel's time columns (perf/official.py;
    no table where none of its points has an official time): its time, the official time and where that came
    from, official / fused (>= 1: target met), causal SDPA FlashAttention at the same point when the profile timed
    it, and the fwdbwd rows' peak memory over inputs + outputs + gradients."""
    if "official_source" not in df:
        return pd.DataFrame()
    fused = df[(df["impl"] == FUSED) & df["official_source"].notna()]
    if fused.empty or (fused["official_source"] == "none").all():  # no official time at any of its points
        return pd.DataFrame()
    flash = df[(df["impl"] == "attention:sdpa_flash") & (df["status"] == "ok")]
    flash_ms = {_point(r): r["time_ms"] for _, r in flash.iterrows()}
    out = []
    for _, r in fused.iterrows():
        key = _shape_key(r)
        name = r.get("shape_name")
        ok = r["status"] == "ok"
        t, off = (float(r["time_ms"]) if ok else math.nan), float(r["official_ms"])
        fl = flash_ms.get(_point(r), math.nan) if _forced(r) is None else math.nan
        peak = r.get("peak_over_io", math.nan)
        place = r.get("shape_index", 0)  # the profile's order of shapes (rows of older runs: none)
        out.append({"_order": (0 if pd.isna(place) else int(place), r["dtype"] != "bf16", int(r["seq_len"]),
                               r["pass"] != "fwd"),
                    "shape": f"{name}: {key}" if isinstance(name, str) and name else key,
                    "L": _length_label(int(r["seq_len"])), "pass": r["pass"],
                    "triton ms": _fmt_ms(t) if ok else r["status"], "official ms": _fmt_ms(off),
                    "official source": r["official_source"],
                    "official / triton": f"{off / t:.2f}x" if ok and not math.isnan(off) else "",
                    "met": ("yes" if t <= off else "no") if ok and not math.isnan(off) else "",
                    "flash ms": _fmt_ms(fl), "flash / triton": f"{fl / t:.2f}x" if ok and not math.isnan(fl) else "",
                    "peak / io": f"{peak:.3f}" if r["pass"] == "fwdbwd" and not pd.isna(peak) else ""})
    t = pd.DataFrame(out).sort_values("_order", kind="stable").drop(columns="_order")
    empty = [c for c in ("flash ms", "flash / triton", "peak / io") if set(t[c]) <= {"", "-"}]
    return t.drop(columns=empty).reset_index(drop=True)


def _cell(g: pd.DataFrame) -> str:
    ok = g[g["status"] == "ok"]
    if len(ok):
        return _fmt_ms(float(ok["time_ms"].median()))
    return "/".join(sorted(set(g["status"])))


OP_ORDER = ("selective_scan", "attention", "s4_fft_conv", "causal_conv1d")


# One colour family per op (scan: black/orange, attention: blues, S4 FFT conv: greens, conv1d: purples), one shade
# per backend, fixed here so a backend keeps its colour in every figure and every run of the profiler. The fused
# Triton scan (this project's kernel) is the thick black line; the official kernel's times, dashed grey.
IMPL_COLOURS = {
    "selective_scan:triton": "#000000", "selective_scan:mamba_ssm": "#636363", "selective_scan:torch": "#e6550d",
    "selective_scan:reference": "#fdae6b",
    "attention:sdpa_flash": "#08519c", "attention:sdpa_cudnn": "#3182bd", "attention:sdpa_efficient": "#6baed6",
    "attention:sdpa_math": "#9ecae1",
    "s4_fft_conv:s4d_layer": "#006d2c", "s4_fft_conv:torch_fft": "#74c476",
    "causal_conv1d:triton": "#54278f", "causal_conv1d:torch": "#9e9ac8",
}


def impl_style(impl: str) -> dict:
    """Line keywords for one op:backend series (a "(ref csv)" suffix marks times read from the reference CSV)."""
    base = impl.replace(" (ref csv)", "")
    colour = IMPL_COLOURS.get(base) or model_colour(base)  # unknown backends: a stable hashed colour
    ref = base != impl
    return {"color": colour, "lw": 2.8 if base == FUSED else 1.5, "ls": "--" if ref or base.endswith("mamba_ssm")
            else "-", "marker": "x" if ref else "o", "ms": 4}


def _impl_order(impl: str):
    op = impl.split(":")[0]
    return (impl != FUSED, OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER), impl)


def _map(df: pd.DataFrame, f) -> pd.DataFrame:
    return df.map(f) if hasattr(df, "map") else df.applymap(f)  # pandas < 2.1 has only applymap


def _by_length(cells: dict[str, dict[int, str]]) -> pd.DataFrame:
    t = pd.DataFrame(cells).sort_index()
    t.index = [_length_label(int(L)) for L in t.index]
    t.index.name = "L"
    return t.fillna("")


def time_table(df: pd.DataFrame, pas: str) -> pd.DataFrame:
    """Rows: L; columns: implementation; cells: median ms, or the status (oom, skipped, unavailable, error)."""
    d = df[df["pass"] == pas]
    if d.empty:
        return pd.DataFrame()
    cells: dict[str, dict[int, str]] = {}
    for (L, impl), g in d.groupby(["seq_len", "impl"]):
        cells.setdefault(impl, {})[int(L)] = _cell(g)
    # Implementations that could not run at all here are listed under "Points without a time", not as columns.
    cells = {c: v for c, v in cells.items() if set(v.values()) != {"unavailable"}}
    return _by_length({c: cells[c] for c in sorted(cells, key=_impl_order)})


def speedup_table(df: pd.DataFrame, pas: str) -> pd.DataFrame:
    """other implementation's time / the fused scan's time, at each length where both ran."""
    d = df[(df["pass"] == pas) & (df["status"] == "ok")]
    piv = d.pivot_table(index="seq_len", columns="impl", values="time_ms", aggfunc="median")
    if FUSED not in piv:
        return pd.DataFrame()
    others = [c for c in sorted(piv.columns, key=_impl_order) if c != FUSED and not c.startswith("causal_conv1d")]
    sp = piv[others].div(piv[FUSED], axis=0)
    sp = sp.dropna(how="all")
    sp.index = [_length_label(int(L)) for L in sp.index]
    sp.index.name = "L"
    return _map(sp, lambda v: "" if pd.isna(v) else f"{v:.2f}x")


def conv_speedup_table(df: pd.DataFrame) -> pd.DataFrame:
    d = df[(df["op"] == "causal_conv1d") & (df["status"] == "ok")]
    piv = d.pivot_table(index="seq_len", columns=["pass", "backend"], values="time_ms", aggfunc="median")
    out = {}
    for pas in ("fwd", "fwdbwd"):
        if (pas, "triton") in piv and (pas, "torch") in piv:
            out[f"{pas}: torch / triton"] = piv[(pas, "torch")] / piv[(pas, "triton")]
    if not out:
        return pd.DataFrame()
    t = pd.DataFrame(out).dropna(how="all")
    t.index = [_length_label(int(L)) for L in t.index]
    t.index.name = "L"
    return _map(t, lambda v: "" if pd.isna(v) else f"{v:.2f}x")


def bandwidth_table(df: pd.DataFrame) -> pd.DataFrame:
    """Achieved GB/s and its fraction of the copy bandwidth, for the memory-bound ops (not attention)."""
    d = df[(df["status"] == "ok") & (df["op"] != "attention") & df["achieved_gbps"].notna()]
    if d.empty:
        return pd.DataFrame()
    d = d.assign(cell=[f"{g:.3g} ({100 * f:.0f}%)" for g, f in zip(d["achieved_gbps"], d["bw_frac"])],
                 col=d["impl"] + " " + d["pass"])
    t = d.pivot_table(index="seq_len", columns="col", values="cell", aggfunc="first")
    t = t[sorted(t.columns, key=lambda c: (_impl_order(c.split(" ")[0]), c))]
    t.index = [_length_label(int(L)) for L in t.index]
    t.index.name = "L"
    return t.fillna("")


# The default figure's series: the fused scan, its peers (the official kernel, the chunked PyTorch scan), the
# fastest attention backends and the fused conv. Every series is in the "_all" figure beside it.
DEFAULT_SERIES = ("selective_scan:triton", "selective_scan:mamba_ssm", "selective_scan:torch", "attention:sdpa_flash",
                  "attention:sdpa_cudnn", "s4_fft_conv:torch_fft", "causal_conv1d:triton")


def plot_time_vs_length(df: pd.DataFrame, out: Path, title: str, series: tuple[str, ...] | None = None
                        ) -> Path | None:
    """Median time per call against L on log-log axes, one line per op:backend with its p20-p80 band; only the
    implementations in `series` (a "(ref csv)" suffix ignored) when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    ok = df[(df["status"] == "ok") & df["time_ms"].notna()]
    if series is not None:
        ok = ok[ok["impl"].str.replace(" (ref csv)", "", regex=False).isin(series)]
    if ok.empty:
        return None
    sns.set_theme(style="whitegrid", context="notebook")
    passes = [p for p in ("fwd", "fwdbwd") if p in set(ok["pass"])]
    fig, axes = plt.subplots(1, len(passes), figsize=(7.5 * len(passes), 5.2), squeeze=False)
    impls = sorted(ok["impl"].unique(), key=_impl_order)
    for ax, pas in zip(axes[0], passes):
        d = ok[ok["pass"] == pas]
        for impl in impls:
            g = d[d["impl"] == impl].groupby("seq_len")[[c for c in BAND if c in d]].median()
            if g.empty:
                continue
            style = impl_style(impl)
            ax.plot(g.index, g["time_ms"], label=impl, **style)
            if {"time_p20_ms", "time_p80_ms"} <= set(g.columns) and g["time_p20_ms"].notna().any():
                ax.fill_between(g.index, g["time_p20_ms"], g["time_p80_ms"], color=style["color"], alpha=0.2, lw=0)
        oom = df[(df["pass"] == pas) & (df["status"] == "oom") & ~df["error"].astype(str).str.startswith("not run")]
        for _, r in oom.iterrows():
            ax.annotate("oom", (r["seq_len"], ax.get_ylim()[1]), fontsize=7, color=impl_style(r["impl"])["color"],
                        ha="center", va="top")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L (tokens, log2 scale)")
        ax.set_ylabel("time (ms, median, log scale)")
        ax.set_title({"fwd": "forward", "fwdbwd": "forward + backward"}[pas])
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=10, title="op:backend")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out)


def kernel_report(df: pd.DataFrame, folder: Path, official: str | None = None) -> list[str]:
    df = df.copy()
    for col in ("time_ms", "achieved_gbps", "bw_frac", "error", "gated", "copy_gbps", "peak_mem_bytes"):
        if col not in df:
            df[col] = math.nan if col != "error" else ""
    df["error"] = df["error"].fillna("")
    measured = df
    if official:
        try:
            off = official_rows(official, df)
            if not off.empty:  # only for implementations this run did not measure (e.g. mamba_ssm not installed)
                ran = set(df.loc[df["status"] == "ok", "impl"])
                off = off[~off["impl"].str.replace(" (ref csv)", "", regex=False).isin(ran)]
                df = pd.concat([df, off], ignore_index=True)
        except (OSError, KeyError, ValueError) as e:
            print(f"ssmbench-profile-report: cannot read {official}: {e}")
    parts = ["# Kernel profile", "",
             "Median time per call (ms) by sequence length, one column per implementation (op:backend). "
             "A cell without a time shows what happened instead: oom (out of memory), skipped (beyond a length "
             "limit, predicted too slow or past the time budget), unavailable (cannot run here), error. "
             "Speed-ups are same-run ratios: the other implementation's time over the fused Triton scan's. "
             "Columns marked (ref csv) come from another process (the official mamba_ssm kernel and SDPA measured "
             "on the same GPU model) and are indicative only.", ""]
    copy = measured["copy_gbps"].dropna()
    if len(copy):
        parts += [f"Copy bandwidth measured in this run: {copy.median():.0f} GB/s (read + written per second).", ""]
    targets = targets_table(measured)
    if not targets.empty:
        parts += ["## Targets: the fused scan against the official mamba_ssm kernel", "",
                  "Median ms. `official source`: same_process (timed in this run: a same-run comparison), "
                  "same_study (an earlier run of this study, resumed), reference_csv (the official_csv file, "
                  "measured in another process: indicative), none. `official / triton` >= 1: the fused scan is at "
                  "least as fast (`met`). `flash`: causal SDPA FlashAttention, same run. `peak / io`: the "
                  "allocator's peak during one forward+backward over inputs + output + output gradient + input "
                  "gradients (CUDA).", "", targets.to_markdown(index=False), ""]
    for key, g in df.groupby(df.apply(_shape_key, axis=1), sort=False):
        first = g.iloc[0]
        parts += [f"## {key}", ""]
        for pas in ("fwd", "fwdbwd"):
            t = time_table(g, pas)
            if t.empty:
                continue
            name = {"fwd": "forward", "fwdbwd": "forward + backward"}[pas]
            parts += [f"### Time (ms), {name}", "", t.to_markdown(), ""]
            sp = speedup_table(g, pas)
            if not sp.empty and sp.shape[1]:
                parts += [f"### Speed-up of the fused scan (selective_scan:triton), {name}", "", sp.to_markdown(), ""]
        cs = conv_speedup_table(g)
        if not cs.empty:
            parts += ["### Causal conv1d: Triton over PyTorch (F.conv1d)", "", cs.to_markdown(), ""]
        bw = bandwidth_table(g)
        if not bw.empty:
            parts += ["### Achieved bandwidth, GB/s (share of the copy bandwidth)", "",
                      "Bytes that must move (inputs read once, outputs written once; the backward reads inputs "
                      "and output gradient again and writes one gradient per input) over the median time.", "",
                      bw.to_markdown(), ""]
        title = f"Time against sequence length — {key} — {first.get('device', '')} (band: p20-p80)"
        p = plot_time_vs_length(g, folder / "plots" / f"time_vs_length_{_shape_slug(first)}.png", title,
                                DEFAULT_SERIES)
        # the figure of every implementation only where it shows more than the default one
        impls = set(g.loc[g["status"] == "ok", "impl"].str.replace(" (ref csv)", "", regex=False))
        p_all = None
        if impls - set(DEFAULT_SERIES):
            p_all = plot_time_vs_length(g, folder / "plots" / f"time_vs_length_{_shape_slug(first)}_all.png",
                                        title.replace("Time", "Every implementation's time", 1))
        if p is not None:
            parts += [f"![time against length, {key}](plots/{p.name})", ""]
        if p_all is not None:
            parts += [f"Every implementation: [plots/{p_all.name}](plots/{p_all.name}).", ""]
    bad = measured[measured["status"] != "ok"]
    if not bad.empty:
        b = bad.groupby(["impl", "pass", "status", "error"], dropna=False)["seq_len"].agg(
            lambda s: ", ".join(_length_label(int(x)) for x in sorted(s))).reset_index()
        b = b.rename(columns={"seq_len": "lengths"})
        parts += ["## Points without a time", "", b.to_markdown(index=False), ""]
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Kernel sweeps (scripts/scan_sweeps.py)

SWEEP_HIDDEN = ("kind", "study", "run_id", "section", "device", "torch", "triton", "cuda", "python", "commit",
                "timestamp", "copy_gbps")


def sweep_report(df: pd.DataFrame) -> list[str]:
    """One table per section of the sweep rows (kind kernel_sweep), its columns those the section fills."""
    parts = ["# Scan kernel sweeps", "",
             "Launch-parameter sweeps of the Triton scan (scripts/scan_sweeps.py): kernel development, not the "
             "benchmark of record (`ssmbench-profile profile=targets`). Median ms (ssmbench/perf/timing.py "
             "time_call); compare rows within a section.", ""]
    copy = df["copy_gbps"].dropna() if "copy_gbps" in df else pd.Series(dtype=float)
    if len(copy):
        parts += [f"Copy bandwidth measured in the same runs: {copy.median():.0f} GB/s.", ""]
    for section in dict.fromkeys(df["section"]):
        g = df[df["section"] == section].dropna(axis=1, how="all")
        g = g[[c for c in g.columns if c not in SWEEP_HIDDEN]]
        cells = _map(g, lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                     else f"{v:.4g}" if isinstance(v, float) else str(v))
        parts += [f"## {section}", "", cells.to_markdown(index=False), ""]
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Generation

def _mode(g) -> str:
    return "graph" if bool(g) else "eager"


def generation_table(df: pd.DataFrame, metric: str, fmt) -> pd.DataFrame:
    """Rows: batch; columns: model and mode; cells: fmt(metric), or the status of a point without a result."""
    out = {}
    for (model, mode), g in df.groupby(["model", df["cuda_graph"].map(_mode)], sort=True):
        g = g.drop_duplicates("batch", keep="last").set_index("batch")
        out[f"{model} ({mode})"] = pd.Series(
            [fmt(v) if s == "ok" and not pd.isna(v) else ("-" if s == "ok" else s)
             for v, s in zip(g[metric], g["status"])], index=g.index)
    t = pd.DataFrame(out).sort_index()
    t.index.name = "batch"
    return t.fillna("")


def _pair(df: pd.DataFrame) -> tuple[str, str] | None:
    arch = df.drop_duplicates("model").set_index("model")["arch"]
    ssm = [m for m, a in arch.items() if a == "mamba"]
    att = [m for m, a in arch.items() if a == "transformer"]
    return (ssm[0], att[0]) if ssm and att else None


def ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mamba / Transformer throughput at each batch, per mode, end-to-end and decode only."""
    pair = _pair(df)
    if pair is None:
        return pd.DataFrame()
    m, t = pair
    ok = df[df["status"] == "ok"]
    out = {}
    for mode, g in ok.groupby(ok["cuda_graph"].map(_mode)):
        for metric, label in (("tokens_per_s", "end-to-end"), ("decode_tokens_per_s", "decode")):
            piv = g.pivot_table(index="batch", columns="model", values=metric, aggfunc="median")
            if m in piv and t in piv:
                ratio = piv[m] / piv[t]
                out[f"{mode} {label}"] = ratio.map(lambda v: "" if pd.isna(v) else f"{v:.2f}x")  # Series.map
    r = pd.DataFrame(out)
    r.index.name = "batch"
    return r.fillna("")


def _count(n) -> str:
    n = float(n)
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def generation_findings(df: pd.DataFrame) -> list[str]:
    lines = []
    for model, g in df.groupby("model"):
        ok = g[g["status"] == "ok"]
        oom = g[(g["status"] == "oom") & ~g["error"].astype(str).str.startswith("not run")]
        first = g.iloc[0]
        per_seq = first.get("state_bytes_per_seq", math.nan)
        line = (f"- {model} ({first['arch']}, {_count(first['params'])} parameters, {int(first['n_layers'])} "
                f"layers of width {int(first['d_model'])}; decode state {per_seq / 2**20:.2f} MiB per sequence): ")
        line += f"largest batch run {int(ok['batch'].max())}" if len(ok) else "no batch ran"
        if len(oom):
            line += f"; out of memory from batch {int(oom['batch'].min())}"
            if first["arch"] == "transformer":
                kv = per_seq * int(oom["batch"].min())
                line += f" (its KV cache alone would be {kv / 2**30:.1f} GiB)"
        total = first.get("device_mem_bytes", math.nan)
        if first["arch"] == "transformer" and not pd.isna(total) and per_seq > 0:
            room = total - first.get("weight_bytes", 0)
            line += (f"; the KV cache needs {per_seq / 2**20:.0f} MiB per sequence, so at most "
                     f"{int(room // per_seq)} sequences fit in the {room / 2**30:.0f} GiB left after the weights")
        lines.append(line + ".")
    pair = _pair(df)
    if pair is not None:
        m, t = pair
        ok = df[df["status"] == "ok"]
        for mode, g in ok.groupby(ok["cuda_graph"].map(_mode)):
            both = sorted(set(g[g["model"] == m]["batch"]) & set(g[g["model"] == t]["batch"]))
            if not both:
                continue
            b = both[-1]
            row = g[g["batch"] == b].set_index("model")
            e2e = row.loc[m, "tokens_per_s"] / row.loc[t, "tokens_per_s"]
            dec = row.loc[m, "decode_tokens_per_s"] / row.loc[t, "decode_tokens_per_s"]
            lines.append(f"- {mode}: at batch {b}, the largest both ran, {m} generates {e2e:.2f}x the tokens/s of "
                         f"{t} end to end (prefill included) and {dec:.2f}x in the decode phase.")
            best_m = g[g["model"] == m]["tokens_per_s"].max()
            best_t = g[g["model"] == t]["tokens_per_s"].max()
            lines.append(f"- {mode}: best end-to-end throughput over all batches: {m} {best_m:,.0f} tok/s, "
                         f"{t} {best_t:,.0f} tok/s ({best_m / best_t:.2f}x).")
    return lines


def plot_generation(df: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import logging

    import matplotlib.pyplot as plt
    import seaborn as sns

    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # batch labels are numeric strings
    sns.set_theme(style="whitegrid", context="notebook")
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return []
    ok["series"] = ok["model"] + " (" + ok["cuda_graph"].map(_mode) + ")"
    series = sorted(ok["series"].unique())
    # One colour per model (the training plots' colours), solid for the CUDA-graph decode, dashed for eager.
    styles = {s_: {"color": model_colour(s_.split(" (")[0]), "ls": "-" if s_.endswith("(graph)") else "--"}
              for s_ in series}
    dev = ", ".join(sorted(df["device"].dropna().unique())) if "device" in df else ""
    first = df.iloc[0]
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    oom = df[df["status"] == "oom"]
    for ax, (col, label) in zip(axes, (("tokens_per_s", "end to end (prefill + decode)"),
                                       ("decode_tokens_per_s", "decode phase only"))):
        for s_ in series:
            g = ok[ok["series"] == s_].groupby("batch")[col].median()
            ax.plot(g.index, g.values, marker="o", ms=4, lw=1.8, label=s_, **styles[s_])
        for model, g in oom.groupby("model"):  # at the foot of the axes (x in data, y in axes fraction)
            ax.plot(sorted(g["batch"].unique()), [0.03] * g["batch"].nunique(), "x", ms=8, mew=2,
                    color=model_colour(model), transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{model}: out of memory")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # batch 1 and batch 1024 differ by ~1000x: a linear axis hides the small batches
        ax.set_xlabel("batch size (sequences, log2 scale)")
        ax.set_ylabel("throughput (generated tokens / s, log scale)")
        ax.set_title(label, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, handlelength=3.5)
    fig.suptitle(f"Generation throughput: prompt {int(first['prompt_len'])}, generate {int(first['gen_len'])} "
                 f"— {dev}", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, folder / "plots" / "throughput.png"))

    mem = ok.assign(gib=ok["peak_mem_bytes"] / 2**30)
    if mem["gib"].notna().sum() == 0:  # CPU runs have no allocator peak
        return paths
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s_ in series:
        g = mem[mem["series"] == s_].groupby("batch")["gib"].median()
        ax.plot(g.index, g.values, marker="o", ms=4, lw=1.8, label=s_, **styles[s_])
    ax.legend(fontsize=9)
    total = df["device_mem_bytes"].dropna() if "device_mem_bytes" in df else pd.Series(dtype=float)
    if len(total):
        ax.axhline(total.iloc[0] / 2**30, color="grey", ls=":", lw=1)
        ax.annotate("device memory", (mem["batch"].min(), total.iloc[0] / 2**30), fontsize=8, color="grey",
                    va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("peak memory (GiB)")
    ax.set_title(f"Peak memory during generation — {dev}", fontsize=10)
    fig.tight_layout()
    paths.append(save_figure(fig, folder / "plots" / "memory.png"))
    return paths


def generation_report(df: pd.DataFrame, folder: Path) -> list[str]:
    df = df.copy()
    for col in ("tokens_per_s", "decode_tokens_per_s", "peak_mem_bytes", "state_bytes_per_seq"):
        if col not in df:
            df[col] = math.nan
    df["error"] = df.get("error", pd.Series("", index=df.index)).fillna("")
    first = df.iloc[0]
    parts = ["# Generation throughput", "",
             f"Prompt {int(first['prompt_len'])} tokens, then {int(first['gen_len'])} generated greedily; random "
             f"weights, {first['dtype']}. tok/s = batch x generated tokens / (prefill + decode time); decode tok/s "
             "counts the decode phase alone. Peak memory: CUDA allocator peak, weights included.", "",
             "## Findings", ""] + generation_findings(df) + [""]
    parts += ["## Tokens per second, end to end (prefill + decode)", "",
              generation_table(df, "tokens_per_s", lambda v: f"{v:,.0f}").to_markdown(), "",
              "## Tokens per second, decode phase", "",
              generation_table(df, "decode_tokens_per_s", lambda v: f"{v:,.0f}").to_markdown(), "",
              "## Peak memory (GiB)", "",
              generation_table(df, "peak_mem_bytes", lambda v: f"{v / 2**30:.1f}").to_markdown(), ""]
    r = ratio_table(df)
    if not r.empty:
        parts += ["## Mamba / Transformer throughput", "", r.to_markdown(), ""]
    paths = plot_generation(df, folder)
    parts += [f"![{p.stem}](plots/{p.name})" for p in paths] + [""]
    bad = df[df["status"] != "ok"]
    if not bad.empty:
        parts += ["## Points without a result", "",
                  bad[["model", "batch", "cuda_graph", "status", "error"]].to_markdown(index=False), ""]
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Generator overhead

def taskgen_report(df: pd.DataFrame, folder: Path) -> list[str]:
    df = df.copy()
    for col in ("gen_ms", "step_ms", "gen_fraction", "seq_len", "batch_size", "device", "precision"):
        if col not in df:
            df[col] = math.nan
    thr = float(df["threshold"].dropna().iloc[0]) if "threshold" in df and df["threshold"].notna().any() else 0.05
    ok = df[df["status"] == "ok"]
    t = pd.DataFrame({
        "experiment": df["experiment"], "model": df["model"], "task": df.get("task"),
        "L": df["seq_len"], "batch": df["batch_size"], "device": df["device"], "precision": df["precision"],
        "generator ms": df["gen_ms"].map(_fmt_ms), "train step ms": df["step_ms"].map(_fmt_ms),
        "generator / step": [f"{100 * v:.2f}%" if s == "ok" else s for v, s in zip(df["gen_fraction"], df["status"])],
    })
    worst = ok["gen_fraction"].max() if len(ok) else math.nan
    verdict = (f"Worst case: {100 * worst:.2f}% of a training step; every point is under {100 * thr:.0f}%."
               if len(ok) and (ok["gen_fraction"] < thr).all() else
               f"Worst case: {100 * worst:.2f}% of a training step; NOT every point is under {100 * thr:.0f}%.")
    return ["# Task generators against a training step", "",
            "Median time to generate one training batch and median time of one training step (forward, backward, "
            "AdamW), same process and device, at each experiment's own configuration.", "", verdict, "",
            t.sort_values(["experiment", "model"]).to_markdown(index=False), ""]


# ---------------------------------------------------------------------------------------------------------------

def _environment(df: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("device", "torch", "triton", "cuda", "python", "commit") if c in df]
    return df[cols].drop_duplicates().to_dict("records") if cols else []


def write_profile_report(folder: str | Path, official: str | None = None) -> str:
    folder = Path(folder)
    rows = load_all(folder)
    if not rows:
        raise SystemExit(f"ssmbench-profile-report: no rows under {folder} (expected {folder}/rows/*.json)")
    df = pd.DataFrame(rows)
    df.drop(columns=[c for c in ("config",) if c in df]).to_csv(folder / "rows.csv", index=False)
    parts = []
    kinds = df["kind"].fillna("") if "kind" in df else pd.Series([""] * len(df))
    if (kinds == "kernel").any():
        parts += kernel_report(df[kinds == "kernel"], folder, official)
    if (kinds == "generation").any():
        parts += generation_report(df[kinds == "generation"], folder)
    if (kinds == "taskgen").any():
        parts += taskgen_report(df[kinds == "taskgen"], folder)
    if (kinds == "kernel_sweep").any():
        parts += sweep_report(df[kinds == "kernel_sweep"])
    env = _environment(df)
    if env:
        parts += ["## Environment", "", pd.DataFrame(env).to_markdown(index=False), ""]
        (folder / "environment.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
    text = "\n".join(parts)
    (folder / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="ssmbench-profile-report", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a profile results folder (holding rows/*.json), e.g. results/kernels")
    ap.add_argument("--official", default=None, help="reference CSV of timings measured elsewhere, joined by shape")
    ap.add_argument("--quiet", action="store_true", help="write the files without printing the summary")
    args = ap.parse_args(argv)
    text = write_profile_report(args.folder, args.official)
    if not args.quiet:
        print(text)


if __name__ == "__main__":
    main()
