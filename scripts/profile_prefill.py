"""Where a prefill's GPU time goes: torch.profiler over one prompt micro-batch of each model of a generation
config (default: the H200 Figure-8 pair), top kernels by GPU time.

    python scripts/profile_prefill.py [--batch 64] [--prompt 2048] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.profiler import ProfilerActivity, profile

from ssmbench.env import environment
from ssmbench.models.lm import ModelConfig
from ssmbench.perf.generation import GenerationConfig, build_model, make_decoder
from ssmbench.perf.timing import cuda_event_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    conf = Path(__file__).resolve().parents[1] / "conf" / "generation" / "h200.yaml"
    models = OmegaConf.to_container(OmegaConf.load(conf)["models"])
    dev, dtype = torch.device("cuda"), torch.bfloat16
    lines = []
    for name, m in models.items():
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), m))
        model = build_model(cfg, GenerationConfig.vocab_size, dev, dtype)
        dec = make_decoder(model, args.batch, args.prompt + 8, dev, dtype)
        prompt = torch.randint(0, GenerationConfig.vocab_size, (args.batch, args.prompt), device=dev)
        with torch.inference_mode():
            dec.prefill(prompt)  # compile / warm up
            ms = cuda_event_ms(lambda d=dec: d.prefill(prompt), dev)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                dec.prefill(prompt)
                torch.cuda.synchronize()
        rows = sorted(((e.key, e.count, getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0))
                       for e in prof.key_averages()), key=lambda r: -r[2])
        total = sum(r[2] for r in rows)
        lines += [f"\n## {name}: prefill of batch {args.batch} x {args.prompt} tokens: {ms:.1f} ms wall, "
                  f"{total / 1e3:.1f} ms of kernels\n", "| kernel | calls | ms | share |", "|---|---|---|---|"]
        lines += [f"| {k[:90]} | {c} | {t / 1e3:.2f} | {t / total:.1%} |" for k, c, t in rows[:15]]
        print("\n".join(lines[-18:]), flush=True)
        del model, dec
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        env = environment(dev)
        head = (f"{env['device']} | torch {env['torch']} | triton {env['triton']} | CUDA {env.get('cuda')} | "
                f"commit {env['commit']} | {time.strftime('%Y-%m-%d')}")
        text = "# Prefill profile\n\n" + head + "\n" + "\n".join(lines) + "\n"
        (Path(args.out) / "prefill_profile.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
