"""`ssmbench-trainbench`: milliseconds per training step for each paper experiment and model, eager against the
step captured as a CUDA graph.

    ssmbench-trainbench --out results/training/rows                 # every experiment x model x step mode
    ssmbench-trainbench --experiments induction --models mamba --modes graphs --tag k4-p0 --out DIR
    ssmbench-trainbench --summarize results/training                # rows -> summary.md, rows.csv, plot
    ssmbench-trainbench --models mamba --modes eager --ensemble 8   # also: 8 seeds as one batched ensemble

A step here is exactly the training loop's: a fresh batch sampled on the device, forward, loss, backward, clip,
AdamW, schedule (ssmbench.step.TrainStep). Each measurement runs `--warmup` steps (graph capture included), then
`--repeats` timed blocks of `--steps` steps with the device synchronised at the block's ends only; the row holds
the median block's ms/step. Several processes sharing one GPU are measured by starting several of these at once
with their own `--tag kN-pI` and one `--barrier` folder (scripts/trainbench_share.sh does it, time-sliced and
under MPS): each process builds and warms up, then waits at the barrier until all N are ready, so that their
timed blocks overlap. The summary puts them beside the process alone.

`--ensemble K` adds, for each model, a row of K seeds trained as one batched ensemble (ssmbench.ensemble: the
members' parameters stacked, one vmapped step serves all K, each member sampling its own batch). Every row carries
`ms_per_member_step` (a solo run's ms_per_step; an ensemble's ms_per_step / K), the number to set beside K solo
steps; the summary does.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from ssmbench.config import compose_config
from ssmbench.env import environment
from ssmbench.metrics import peak_memory_bytes, reset_peak_memory, synchronize
from ssmbench.models.lm import LanguageModel
from ssmbench.run import prepare
from ssmbench.step import TrainStep

from .timing import wall_ms

ATTENTION = ["model.d_model=128", "model.layer.n_heads=8"]
# The paper's experiments and the models each one trains (Hydra overrides).
EXPERIMENTS = {
    "induction": {
        "mamba": ["experiment=induction", "model=mamba"],
        "transformer": ["experiment=induction", "model=transformer", *ATTENTION, "trainer.lr=2e-4"],
        "h3": ["experiment=induction", "model=h3", "trainer.lr=2e-4"],
        "hyena": ["experiment=induction", "model=hyena", "trainer.lr=2e-4"],
        "lstm": ["experiment=induction", "model=lstm"],
    },
    "table1": {name: ["experiment=table1", f"model={name}"] for name in
               ("mamba", "s6_nogate", "s6_h3", "s4", "h3", "hyena", "mamba_s4", "mamba_hyena", "transformer", "lstm")},
}


def build_step(overrides: list[str], mode: str):
    """The training loop's step for one experiment's model, seeded: (prepared run, model, step, next_batch)."""
    cfg = compose_config([*overrides, f"trainer.step_mode={mode}", "trainer.progress=false"])
    p = prepare(cfg)
    torch.manual_seed(0)
    model = LanguageModel(p.model_cfg, p.task.vocab_size).to(p.device)
    step = TrainStep(model, p.task, p.trainer, p.device, p.precision, mode)
    gen = torch.Generator(device=p.device).manual_seed(0)
    return p, model, step, lambda: p.task.sample(p.trainer.batch_size, None, gen)


def build_ensemble(overrides: list[str], k: int):
    """K seeds of one experiment's model as one EnsembleStep: (prepared run of seed 0, step, next_batch)."""
    from ssmbench.ensemble import EnsembleStep, build_members

    preps = [prepare(compose_config([*overrides, f"seed={seed}", "trainer.progress=false"])) for seed in range(k)]
    p = preps[0]
    step = EnsembleStep(build_members(preps), p.task, p.trainer, p.device, p.precision)
    gens = [torch.Generator(device=p.device).manual_seed(seed) for seed in range(k)]
    return p, step, lambda: step.sample(gens)


def bench_ensemble(overrides: list[str], k: int, steps: int, warmup: int, repeats: int) -> dict:
    p, step, next_batch = build_ensemble(overrides, k)
    reset_peak_memory(p.device)
    blocks_ms = wall_ms(lambda: step(next_batch()), p.device, warmup=warmup, repeats=repeats, calls=steps)
    ms = statistics.median(blocks_ms)
    rows = step.meters.read()
    bs = p.trainer.batch_size
    return {"ms_per_step": ms, "ms_per_member_step": ms / k, "ensemble_k": k,
            "tokens_per_s": k * bs * p.task.seq_len / (ms / 1e3), "step_mode": "eager", "step_mode_reason": "",
            "batch_size": bs, "seq_len": p.task.seq_len, "params": sum(t[0].numel() for t in step.params.values()),
            "peak_mem_bytes": peak_memory_bytes(p.device), "precision": p.precision,
            "finite_loss": all(r["last_loss"] == r["last_loss"] for r in rows), "ms_per_step_blocks": blocks_ms,
            # the earliest step at which any member's loss was not finite (-1: none), to tell a blow-up late in the
            # timed blocks from a step that is wrong from the start
            "first_bad_step": min((r["first_bad_step"] for r in rows if r["first_bad_step"] >= 0), default=-1)}


def sharing_of(tag: str) -> tuple[int, str]:
    """`kN-pI` -> (N, "time-sliced"); `kN-pI-mps` -> (N, "MPS"); anything else -> (1, "alone")."""
    m = re.fullmatch(r"k(\d+)-p\d+(-mps)?", tag or "")
    if not m:
        return 1, "alone"
    return int(m.group(1)), "MPS" if m.group(2) else "time-sliced"


def wait_at_barrier(folder: Path, name: str, tag: str, parties: int, timeout_s: float = 600.0) -> None:
    """Mark this process ready in `folder`, then wait until `parties` processes are: the k processes sharing the
    GPU then time overlapping blocks, not one another's compilation."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.{tag}.ready").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob(f"{name}.*.ready"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {folder}: {parties} processes expected for {name}, "
                               f"{len(list(folder.glob(f'{name}.*.ready')))} came within {timeout_s:.0f} s")
        time.sleep(0.05)


def bench_one(overrides: list[str], mode: str, steps: int, warmup: int, repeats: int,
              barrier=None) -> dict:
    """barrier: None, or a callable run after the warm-up steps, before the timed blocks."""
    p, model, step, next_batch = build_step(overrides, mode)
    bs = p.trainer.batch_size
    reset_peak_memory(p.device)
    if barrier is not None:
        for _ in range(warmup):
            step(next_batch())
        synchronize(p.device)
        barrier()
        warmup = 1
    blocks_ms = wall_ms(lambda: step(next_batch()), p.device, warmup=warmup, repeats=repeats,
                        calls=steps)
    ms = statistics.median(blocks_ms)
    last = step.meters.read()
    return {"ms_per_step": ms, "tokens_per_s": bs * p.task.seq_len / (ms / 1e3), "step_mode": step.mode,
            "step_mode_reason": step.reason, "compile": step.compile, "batch_size": bs, "seq_len": p.task.seq_len,
            "params": model.num_parameters(), "peak_mem_bytes": peak_memory_bytes(p.device),
            "precision": p.precision, "finite_loss": last["last_loss"] == last["last_loss"],
            "ms_per_member_step": ms, "ms_per_step_blocks": blocks_ms}


def run(args) -> list[dict]:
    rows = []
    out = Path(args.out) if args.out else None
    env = None
    for exp in args.experiments:
        for name, overrides in EXPERIMENTS[exp].items():
            if args.models and name not in args.models:
                continue
            for mode in args.modes + (["ensemble"] if args.ensemble else []):
                base = {"experiment": exp, "model": name, "mode_asked": mode, "tag": args.tag}
                barrier = None
                if args.barrier and mode != "ensemble":
                    barrier = partial(wait_at_barrier, Path(args.barrier), f"{exp}-{name}-{mode}", args.tag,
                                      sharing_of(args.tag)[0])
                try:
                    if mode == "ensemble":
                        measured = bench_ensemble(overrides + args.override, args.ensemble, args.steps, args.warmup,
                                                  args.repeats)
                    else:
                        measured = bench_one(overrides + args.override, mode, args.steps, args.warmup, args.repeats,
                                             barrier)
                    row = {**base, **measured}
                except Exception as e:  # one model failing must not cost the others' numbers
                    row = {**base, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                if env is None:
                    env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
                row.update(env)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "ms_per_step_blocks"}), flush=True)
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    (out / f"{args.tag or 'solo'}.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def summarize(folder: Path) -> str:
    import pandas as pd

    rows = [r for p in sorted((folder / "rows").glob("*.json")) for r in json.loads(p.read_text())]
    df = pd.DataFrame(rows)
    df.drop(columns=["ms_per_step_blocks"], errors="ignore").to_csv(folder / "rows.csv", index=False)
    solo = df[df["tag"].fillna("") == ""]
    lines = ["# Training step time", "", f"Device: {df['device'].iloc[0]}; torch {df['torch'].iloc[0]}, "
             f"triton {df['triton'].iloc[0]}; commit {df['commit'].iloc[0]}. Median of "
             "timed blocks, ms per step (sampling, forward, backward, clip, AdamW).", ""]
    if len(solo):
        table = solo[solo["mode_asked"] != "ensemble"].pivot_table(index=["experiment", "model"],
                                                                    columns="mode_asked", values="ms_per_step")
        if {"eager", "graphs"} <= set(table.columns):
            table["eager / graphs"] = table["eager"] / table["graphs"]
        lines += ["## One process", "", table.round(3).to_markdown(), ""]
        if (solo["mode_asked"] == "ensemble").any():
            lines += ensemble_lines(solo)
        fell_back = solo[solo["step_mode_reason"].fillna("") != ""]
        for _, r in fell_back.iterrows():
            lines.append(f"- {r['experiment']} {r['model']}: {r['step_mode_reason']}")
    lines += tagged_lines(df)
    shared = df[df["tag"].fillna("").str.startswith("k")]
    if len(shared):
        kinds = shared["tag"].map(sharing_of)
        shared = shared.assign(k=[k for k, _ in kinds], sharing=[how for _, how in kinds])
        agg = shared.groupby(["experiment", "model", "mode_asked", "sharing", "k"]).agg(
            ms_per_step=("ms_per_step", "median"), runs=("ms_per_step", "size")).reset_index()
        agg["steps/s, all runs"] = agg["runs"] * 1e3 / agg["ms_per_step"]
        # The measure: the wall time of k runs against one run alone (k runs of S steps each take
        # ms_per_step * S when they overlap): 1.0 = free, k = no overlap at all.
        alone = solo.set_index(["experiment", "model", "mode_asked"])["ms_per_step"] if len(solo) else None
        if alone is not None:
            keys = list(zip(agg["experiment"], agg["model"], agg["mode_asked"]))
            agg["wall of k runs / one run"] = [ms / alone.get(key, float("nan")) for ms, key in
                                               zip(agg["ms_per_step"], keys)]
        lines += ["", "## k processes sharing the GPU (median ms/step of one process)", "",
                  agg.round(3).to_markdown(index=False), ""]
    lines += plot_lines(df, solo, folder)
    text = "\n".join(lines) + "\n"
    (folder / "summary.md").write_text(text)
    return text


def plot_lines(df, solo, folder: Path) -> list[str]:
    """Draws plots/step_time.png (the solo rows by step mode) and plots/settings_ratio.png (the setting tags against
    their baselines) where the rows have them; returns the summary's lines that show them."""
    from .training_plots import settings_ratio_plot, step_time_plot

    tagged = setting_rows(df)
    paths = [step_time_plot(solo, folder / "plots") if len(solo) else None,
             settings_ratio_plot(tagged, folder / "plots") if len(tagged) else None]
    return ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in paths if p] if any(paths) else []


# The baseline tag of each family of setting tags: step_options rows against `defaults`, compile rows against
# `compile-none` (scripts/gpu_profile_all.sh).
BASELINES = ("defaults", "compile-none")


def setting_rows(df):
    """The rows tagged with a setting (stage step_options: `SSMBENCH_FFTCONV-bhl`, `defaults`; stage compile:
    `compile-default`), not with a sharing tag (kN-pI) or none."""
    tags = df["tag"].fillna("")
    return df[(tags != "") & ~tags.str.match(r"^k\d+-p\d+")]


def setting_ratios(tagged) -> dict:
    """{baseline tag: ms per step of each tag of its family (the baseline's own row included) / the baseline's,
    tags x models} for the baselines the rows hold; under 1 is faster."""
    table = tagged.pivot_table(index="tag", columns="model", values="ms_per_step")
    ratios = {}
    for base in BASELINES:
        if base in table.index:
            family = [t for t in table.index if t.startswith("compile-") == base.startswith("compile-")]
            ratios[base] = table.loc[family] / table.loc[base]
    return ratios


def tagged_lines(df) -> list[str]:
    """ms per step by setting tag and model (setting_rows), and each tag's ratio to its baseline where the folder
    has one."""
    tagged = setting_rows(df)
    if tagged.empty:
        return []
    table = tagged.pivot_table(index="tag", columns="model", values="ms_per_step")
    lines = ["", "## By setting (tag), ms per step", "", table.round(3).to_markdown(), ""]
    for base, ratio in setting_ratios(tagged).items():
        lines += [f"## Ratio to `{base}` (under 1: faster)", "", ratio.round(3).to_markdown(), ""]
    return lines


def ensemble_lines(solo) -> list[str]:
    """The ensembles' ms per member-step beside the solo runs' ms per step (the same thing: what one run's step
    costs), and how many times cheaper the ensemble makes it."""
    k = solo.loc[solo["mode_asked"] == "ensemble", "ensemble_k"].dropna()
    table = solo.pivot_table(index=["experiment", "model"], columns="mode_asked", values="ms_per_member_step")
    for mode in ("eager", "graphs"):
        if mode in table.columns:
            table[f"{mode} / ensemble"] = table[mode] / table["ensemble"]
    ks = ", ".join(str(int(v)) for v in sorted(set(k)))
    return ["", f"## Batched ensemble (k = {ks} seeds in one step): ms per member-step", "",
            table.round(3).to_markdown(), ""]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="ssmbench-trainbench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument("--models", nargs="*", default=[])
    ap.add_argument("--modes", nargs="+", default=["eager", "graphs"], choices=["eager", "graphs", "auto"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tag", default="", help="kN-pI for process I of N sharing the GPU (kN-pI-mps under MPS)")
    ap.add_argument("--barrier", default="", help="folder where the N processes of a kN tag wait for one another "
                    "after warm-up, so their timed blocks overlap")
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    ap.add_argument("--out", default="", help="folder for this process's rows (<tag or solo>.json)")
    ap.add_argument("--ensemble", type=int, default=0, metavar="K",
                    help="also time K seeds of each model as one batched ensemble (ssmbench.ensemble); 0: off")
    ap.add_argument("--summarize", default="", help="write summary.md and rows.csv of FOLDER/rows and exit")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(Path(args.summarize)))
        return
    if args.ensemble < 0:
        ap.error(f"--ensemble must be >= 0 (0: off), got {args.ensemble}")
    run(args)


if __name__ == "__main__":
    main()
