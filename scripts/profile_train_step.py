"""Where a training step's time goes: a torch.profiler trace of a few steps of one experiment's model, summarised
as the kernels (GPU) or ops (CPU) that take the most time, grouped into the families a reader can act on.

    python scripts/profile_train_step.py --experiment table1 --model mamba --out results/training/profile
    python scripts/profile_train_step.py --experiment induction --model transformer --mode eager

Writes <out>/profile_<experiment>_<model>_<mode>.md (the tables, the environment and commit) and, with --trace,
a Chrome trace (open in chrome://tracing or Perfetto). The step is exactly the training loop's
(ssmbench.step.TrainStep), warmed up (and captured, in graphs mode) before the profiled steps; in graphs mode the
profiler still sees each kernel of the replayed graph on the GPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ssmbench.env import environment
from ssmbench.metrics import synchronize
from ssmbench.perf.training import EXPERIMENTS, build_step

# Kernel/op name patterns -> the family of work they belong to (first match wins).
FAMILIES = [
    ("selective scan (Triton)", r"scan_(fwd|bwd)|_scan|selective"),
    ("causal conv1d", r"conv1d|_conv_|conv_(fwd|bwd)|conv_depthwise"),
    # before GEMM: cuDNN's SDPA kernels carry "sm90" in their names too
    ("attention (SDPA)", r"flash|attention|fmha|sdpa|efficient_attention"),
    ("GEMM (projections, head)", r"gemm|matmul|mm_|sm90|cutlass|cublas|nvjet|addmm|\bmm\b|bmm|linear"),
    ("FFT convolution", r"fft"),
    ("cross-entropy / softmax", r"cross_entropy|nll|softmax|log_softmax"),
    # before the optimizer's "norm": a LayerNorm forward kernel is vectorized_layer_norm_kernel (session 8's
    # profile counted it as the optimizer's)
    ("norms (RMSNorm/LayerNorm)", r"rms|layer_norm|layernorm|gammabeta"),
    ("optimizer (AdamW, clipping)", r"adam|foreach|multi_tensor|norm_kernel|clip"),
    ("embedding backward (sort, segments)", r"radix_sort|segment|compute_grad_weight|embedding"),
    ("layout copies / casts", r"copy|transpose|contiguous|cat|to_copy|direct_copy|_to\b|memcpy"),
    ("reductions", r"reduce|sum|mean|argmax"),
    ("element-wise", r"elementwise|vectorized|unrolled|silu|gelu|mul|add|exp|sigmoid|where|gather|fill"),
]


def family(name: str) -> str:
    low = name.lower()
    for fam, pat in FAMILIES:
        if re.search(pat, low):
            return fam
    return "other"


def profile_step(overrides: list[str], mode: str, warmup: int, steps: int, trace: Path | None, shapes: bool = False):
    p, _, step, next_batch = build_step(overrides, mode)
    for _ in range(warmup):
        step(next_batch())
    synchronize(p.device)
    cuda = p.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=shapes) as prof:
        for _ in range(steps):
            step(next_batch())
        synchronize(p.device)
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    return prof, p, step


def _self_us(evt, cuda: bool) -> float:
    """An event's own time: on the GPU its kernels' (self_device_time_total; self_cuda_time_total before torch
    named it so), else its CPU time."""
    if not cuda:
        return evt.self_cpu_time_total
    us = getattr(evt, "self_device_time_total", None)
    return evt.self_cuda_time_total if us is None else us


def summarise(prof, cuda: bool, steps: int) -> tuple[list, dict]:
    """Per-kernel rows (name, calls per step, ms per step) and per-family ms per step."""
    rows = []
    fam_ms: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        # On the GPU only the kernels (and memcpy/memset) count: in an eager step the aten op that launched a kernel
        # carries that kernel's time as its own "self device time" too, so counting both doubled the total (the
        # eager H3 profile of session 9 read 28.6 ms for a 14.4 ms step).
        if cuda and evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = _self_us(evt, cuda)
        if us <= 0:
            continue
        ms = us / 1e3 / steps
        rows.append((evt.key, evt.count / steps, ms))
        fam_ms[family(evt.key)] += ms
    rows.sort(key=lambda r: -r[2])
    return rows, dict(sorted(fam_ms.items(), key=lambda kv: -kv[1]))


def op_rows(prof, cuda: bool, steps: int) -> list[tuple[str, str, float, float]]:
    """Per (aten op, input shapes): calls per step and the time of the kernels it launched itself (self: a parent
    op does not count its children's), so the kernels above can be traced to the code that calls them. Eager
    only: a replayed CUDA graph runs no ops."""
    rows = []
    for evt in prof.key_averages(group_by_input_shape=True):
        if not evt.key.startswith("aten::"):
            continue
        us = _self_us(evt, cuda)
        if us > 0:
            rows.append((evt.key, str(evt.input_shapes), evt.count / steps, us / 1e3 / steps))
    return sorted(rows, key=lambda r: -r[3])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="table1", choices=list(EXPERIMENTS))
    ap.add_argument("--model", default="mamba")
    ap.add_argument("--mode", default="auto", choices=["auto", "eager", "graphs"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument("--out", default="results/training/profile")
    ap.add_argument("--trace", action="store_true", help="also write a Chrome trace")
    ap.add_argument("--ops", action="store_true",
                    help="also list the aten ops (with their input shapes) whose kernels take the most time; needs "
                         "--mode eager")
    args = ap.parse_args(argv)
    if args.model not in EXPERIMENTS[args.experiment]:
        sys.exit(f"--model {args.model!r} is not one of {sorted(EXPERIMENTS[args.experiment])}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"profile_{args.experiment}_{args.model}_{args.mode}"
    overrides = EXPERIMENTS[args.experiment][args.model] + args.override
    if args.ops and args.mode != "eager":
        sys.exit("--ops needs --mode eager: a replayed CUDA graph runs no ops for the profiler to see")
    prof, p, step = profile_step(overrides, args.mode, args.warmup, args.steps,
                                 out / f"{stem}.json" if args.trace else None, shapes=args.ops)
    cuda = p.device.type == "cuda"
    rows, fams = summarise(prof, cuda, args.steps)
    total = sum(fams.values())
    env = environment(p.device)
    where = "GPU kernel time (self)" if cuda else "CPU op time (self)"
    lines = [f"# Training step profile: {args.experiment} / {args.model} ({step.mode})", "",
             f"{env['device']}; torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}; commit "
             f"{env['commit']}. Batch {p.trainer.batch_size}, L {p.task.seq_len}, {p.precision}. {args.steps} steps "
             f"profiled after {args.warmup} warm-up steps. {where}: {total:.3f} ms per step in all.",
             "", f"Command: `python scripts/profile_train_step.py {' '.join(argv or sys.argv[1:])}`", "",
             "## By family", "", "| family | ms per step | share |", "|---|---|---|"]
    lines += [f"| {f} | {ms:.3f} | {100 * ms / max(total, 1e-12):.1f}% |" for f, ms in fams.items()]
    lines += ["", f"## Top {args.top} {'kernels' if cuda else 'ops'}", "",
              "| name | calls per step | ms per step | family |", "|---|---|---|---|"]
    for name, calls, ms in rows[:args.top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short}` | {calls:g} | {ms:.3f} | {family(name)} |")
    if args.ops:
        lines += ["", f"## Top {args.top} ops, by the time of the kernels each launched itself", "",
                  "| op | input shapes | calls per step | ms per step |", "|---|---|---|---|"]
        for name, shapes, calls, ms in op_rows(prof, cuda, args.steps)[:args.top]:
            shapes = shapes if len(shapes) <= 80 else shapes[:77] + "..."
            lines.append(f"| `{name}` | `{shapes}` | {calls:g} | {ms:.3f} |")
    if step.reason:
        lines += ["", f"Note: {step.reason}"]
    text = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
