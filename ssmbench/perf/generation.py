"""Decode throughput, the Mamba paper's Figure 8 (right): a Mamba and a Transformer of the same width and size,
random weights, a random prompt of `prompt_len` tokens, then `gen_len` tokens generated greedily, at growing
batch sizes. Each row: tokens/s and peak memory for one (model, batch, mode).

    rows = run_generation(GenerationConfig(...))      # what `ssmbench-generate` runs (ssmbench/perf/cli.py)

How each model generates: through its own inference API (LanguageModel.allocate_cache, prefill, step; see
models/lm.py), on a cache allocated once for prompt_len + gen_len tokens (no regrowth, so memory is exactly what
the cache needs).
  Mamba        prefill: every block's forward in the scan's channel-major layout on CUDA, keeping the last conv
               inputs and the scan's last state (the fused Triton scan); then one token at a time through the fused
               decode kernels (causal_conv1d_update and selective_state_update, Triton) on a fixed-size state.
  Transformer  prefill: every block's forward, writing K and V (after RoPE) into the preallocated KV cache; then
               one token at a time: attention of the new query over the cache through SDPA (flash_attn when
               importable).
Modes: eager, and (CUDA) CUDA graphs: one decode step (model step, argmax, feeding the token back) captured
once per batch size and replayed. Under a graph the Transformer cannot slice its cache by a Python position, so
its step writes K/V at a device-side position and attends over the whole cache with a mask of the filled part
(InferenceCache.graph_safe; attn_impl says which path ran).

Timing (CUDA-synchronised wall clock): prefill once (it yields the first new token), then gen_len - 1 decode
steps. tokens_per_s = batch * gen_len / (prefill + decode), the end-to-end rate the paper's benchmark measures;
decode_tokens_per_s = batch * (gen_len - 1) / decode, the generation phase alone. Under CUDA graphs the first
step runs eagerly (warm-up before capture) and the decode time is the mean replayed step times (gen_len - 1).
Peak memory: the CUDA allocator's peak over prefill and that mode's decode, weights included.
A batch that runs out of memory is an "oom" row and the larger batches of that model are not tried.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ssmbench.env import environment, resolve_device
from ssmbench.metrics import is_out_of_memory, reset_peak_memory, synchronize
from ssmbench.models.blocks import MambaBlock, TransformerBlock
from ssmbench.models.layers.attention import Attention, Rotary
from ssmbench.models.layers.base import ssm_parameter_names
from ssmbench.models.lm import LanguageModel, ModelConfig
from ssmbench.results import rows_path, run_id, write_rows

from .timing import DTYPES, Budget, allocator_peak, free_memory

log = logging.getLogger("ssmbench.generation")


def default_models() -> dict[str, ModelConfig]:
    """Width 1024, tied embeddings, vocab 50280: the Transformer has 24 layers of attention (16 heads, RoPE) +
    MLP (354M parameters), Mamba 48 Mamba blocks (384M): two Mamba blocks have the parameters of one attention +
    MLP layer, the paper's pairing of equal-size models."""
    return {
        "mamba": ModelConfig(name="mamba", arch="mamba", layer={"name": "s6", "d_state": 16}, d_model=1024,
                             n_layers=48, tie_embeddings=True),
        "transformer": ModelConfig(name="transformer", arch="transformer",
                                   layer={"name": "attention", "n_heads": 16, "pos": "rope"}, d_model=1024,
                                   n_layers=24, tie_embeddings=True),
    }


@dataclass
class GenerationConfig:
    study: str = "generation"
    results_root: str = "results"
    device: str = "auto"
    dtype: str = "bf16"
    prompt_len: int = 2048
    gen_len: int = 128
    batches: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 256, 512, 1024])
    vocab_size: int = 50280
    models: dict[str, ModelConfig] = field(default_factory=default_models)
    cuda_graphs: list[bool] = field(default_factory=lambda: [False, True])  # modes to time (graphs: CUDA only)
    prefill_batch: int = 64  # prompts are prefilled this many sequences at a time (bounds activation memory)
    budget_s: Optional[float] = None  # wall-clock budget; later points are "skipped"
    seed: int = 0
    report: bool = True


class GenerationConfigError(ValueError):
    pass


def validate_generation(cfg: GenerationConfig) -> None:
    if cfg.dtype not in DTYPES:
        raise GenerationConfigError(f"dtype={cfg.dtype!r} is not one of {sorted(DTYPES)}")
    for k in ("prompt_len", "vocab_size", "prefill_batch"):
        if getattr(cfg, k) <= 0:
            raise GenerationConfigError(f"{k} must be > 0, got {getattr(cfg, k)}")
    if cfg.gen_len < 3:
        raise GenerationConfigError(f"gen_len must be >= 3 (prefill token, warm-up step, timed steps), "
                                    f"got {cfg.gen_len}")
    if not cfg.batches or any(b <= 0 for b in cfg.batches):
        raise GenerationConfigError(f"batches must be positive integers, got {cfg.batches}")
    if not cfg.models:
        raise GenerationConfigError("models must name at least one model")
    for name, m in cfg.models.items():
        try:
            with torch.device("meta"):
                model = LanguageModel(m, cfg.vocab_size)
            check_supported(model)
        except ValueError as e:
            raise GenerationConfigError(f"models.{name}: {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# Models and decoders

def build_model(cfg: ModelConfig, vocab_size: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> LanguageModel:
    """Random weights, built directly on `device`, cast to `dtype` except the SSM parameters (A_log, D, dt bias
    stay fp32, as in mamba_ssm), in eval mode without gradients."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = LanguageModel(cfg, vocab_size)
    model.to(dtype)
    for name, p in model.named_parameters():
        if name in ssm_parameter_names(model):
            p.data = p.data.float()
    for m in model.modules():
        if isinstance(m, Rotary):  # RoPE frequencies in bf16 would blur positions in the thousands
            m.float()
    return model.eval().requires_grad_(False)


class Decoder:
    """A batch of sequences being generated, through the model's own inference API: one cache allocated for
    `capacity` tokens (prompt + generated) by model.allocate_cache, model.prefill, then model.step."""

    def __init__(self, model: LanguageModel, batch: int, capacity: int, device: torch.device, dtype: torch.dtype):
        self.model, self.batch, self.capacity, self.device, self.dtype = model, batch, capacity, device, dtype
        self.cache = model.allocate_cache(batch, capacity, device, dtype)
        self.graphable = model.cfg.pos_emb == "none"  # an absolute position is read on the host
        self.attn_impl = None
        if all(isinstance(b, TransformerBlock) for b in model.blocks):
            self.attn_impl = "flash_attn" if model.blocks[0].layer.uses_flash_attn(device, dtype) else "sdpa"

    def prefill(self, prompt: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        """prompt: Long[batch, P] -> logits of the last position [batch, V]; the cache then holds the prompt."""
        B, P = prompt.shape
        assert B == self.batch and P < self.capacity
        return self.model.prefill(prompt, self.cache, micro_batch)

    def snapshot(self) -> Any:
        return self.cache.snapshot()

    def restore(self, snap: Any) -> None:
        self.cache.restore(snap)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Eager decode step: Long[batch] -> logits [batch, V]; advances the cache in place."""
        self.cache.graph_safe = False
        return self.model.step(tokens, self.cache)

    def step_static(self, tokens: torch.Tensor) -> torch.Tensor:
        """The step as a CUDA graph can replay it: positions kept on the device (see InferenceCache.graph_safe)."""
        self.cache.graph_safe = True
        return self.model.step(tokens, self.cache)

    def state_bytes(self) -> int:
        return self.cache.nbytes()


def supports(model: LanguageModel) -> bool:
    """The benchmark's two models: Mamba blocks around S6, Transformer blocks around attention."""
    return (all(isinstance(b, MambaBlock) and b.fuse_gate for b in model.blocks)
            or all(isinstance(b, TransformerBlock) and isinstance(b.layer, Attention) for b in model.blocks))


def check_supported(model: LanguageModel) -> None:
    if not supports(model):
        raise ValueError(f"generation supports Mamba blocks around S6 and Transformer blocks around attention; "
                         f"got arch={model.cfg.arch!r}, layer={model.cfg.layer.get('name')!r}")


def make_decoder(model, batch, capacity, device, dtype) -> Decoder:
    check_supported(model)
    return Decoder(model, batch, capacity, device, dtype)


# ---------------------------------------------------------------------------------------------------------------
# Generation and timing

@torch.no_grad()
def greedy_generate(decoder: Decoder, prompt: torch.Tensor, gen_len: int, cuda_graph: bool = False,
                    micro_batch: int | None = None) -> dict[str, Any]:
    """Prefill + (gen_len - 1) greedy steps. Returns tokens Long[batch, gen_len] and the timings."""
    dev = decoder.device
    synchronize(dev)
    t0 = time.perf_counter()
    first = decoder.prefill(prompt, micro_batch).argmax(-1)
    synchronize(dev)
    prefill_s = time.perf_counter() - t0
    out = decode(decoder, first, gen_len, cuda_graph)
    out["prefill_s"] = prefill_s
    return out


@torch.no_grad()
def decode(decoder: Decoder, first: torch.Tensor, gen_len: int, cuda_graph: bool) -> dict[str, Any]:
    """From the token the prefill produced, gen_len - 1 greedy steps; timed (see the module docstring)."""
    dev = decoder.device
    tokens = [first]
    if not cuda_graph:
        synchronize(dev)
        t0 = time.perf_counter()
        nxt = first
        for _ in range(gen_len - 1):
            nxt = decoder.step(nxt).argmax(-1)
            tokens.append(nxt)
        synchronize(dev)
        decode_s = time.perf_counter() - t0
        return {"tokens": torch.stack(tokens, 1), "decode_s": decode_s, "capture_s": math.nan}
    static = first.clone()
    # Warm-up (a real step, the first of the decode) on a side stream, as CUDA graph capture wants.
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        static.copy_(decoder.step_static(static).argmax(-1))
    torch.cuda.current_stream(dev).wait_stream(side)
    tokens.append(static.clone())
    synchronize(dev)
    t0 = time.perf_counter()
    graph = torch.cuda.CUDAGraph()
    gc_was = gc.isenabled()
    gc.disable()  # a compiled Triton kernel finalised by the GC mid-capture would invalidate the graph
    try:
        with torch.cuda.graph(graph):
            static.copy_(decoder.step_static(static).argmax(-1))
    finally:
        if gc_was:
            gc.enable()
    synchronize(dev)
    capture_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(gen_len - 2):
        graph.replay()
        tokens.append(static.clone())
    synchronize(dev)
    per_step = (time.perf_counter() - t0) / (gen_len - 2)
    del graph
    return {"tokens": torch.stack(tokens, 1), "decode_s": per_step * (gen_len - 1), "capture_s": capture_s}


def run_generation(cfg: GenerationConfig) -> list[dict]:
    validate_generation(cfg)
    device = resolve_device(cfg.device, GenerationConfigError)
    dtype = DTYPES[cfg.dtype]
    env = environment(device)
    clock = Budget(cfg.budget_s)
    capacity = cfg.prompt_len + cfg.gen_len
    modes = []
    for g in cfg.cuda_graphs:
        if g not in modes:
            modes.append(bool(g))
    modes.sort()  # eager first: the graphed tokens are checked against it
    models, info = {}, {}
    for name, mcfg in cfg.models.items():
        models[name] = build_model(mcfg, cfg.vocab_size, device, dtype, cfg.seed)
        m = models[name]
        per_seq = _state_bytes_per_sequence(m, capacity, device, dtype)
        info[name] = {"model": name, "arch": mcfg.arch, "layer": mcfg.layer.get("name"), "params": m.num_parameters(),
                      "weight_bytes": sum(p.numel() * p.element_size() for p in m.parameters()),
                      "d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "state_bytes_per_seq": per_seq}
        log.info("%s: %s, %.1fM parameters, decode state %.2f MiB per sequence", name, mcfg.arch,
                 info[name]["params"] / 1e6, per_seq / 2**20)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    # Warm-up: compile the kernels (Triton), pick cuBLAS algorithms; nothing of it is timed. It doubles as a
    # check that the decoder generates what greedy argmax of forward() would (recorded in every row).
    for name, m in models.items():
        try:
            dec = make_decoder(m, 1, capacity, device, dtype)
            prompt = torch.randint(0, cfg.vocab_size, (1, cfg.prompt_len), generator=gen, device=device)
            tokens = greedy_generate(dec, prompt, 3, False, cfg.prefill_batch)["tokens"]
            info[name]["decode_matches_forward"] = _greedy_agreement(m, prompt, tokens)
        except Exception as e:  # reported by the real runs below
            log.warning("warm-up of %s failed: %s: %s", name, type(e).__name__, e)
        finally:
            dec = None
            free_memory(device)
        log.info("%s: decoded tokens equal greedy argmax of forward(): %s", name,
                 info[name].get("decode_matches_forward"))

    base = {"kind": "generation", "study": cfg.study, "prompt_len": cfg.prompt_len, "gen_len": cfg.gen_len,
            "dtype": cfg.dtype, "vocab_size": cfg.vocab_size, "prefill_batch": cfg.prefill_batch,
            "device_mem_bytes": torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
            else math.nan, **env}
    all_rows = []
    oom_at: dict[str, int] = {}
    for batch in sorted(cfg.batches):
        for name, m in models.items():
            rows = _run_point(name, m, batch, modes, cfg, device, dtype, gen, clock, oom_at,
                              {**base, **info[name], "batch": batch})
            rid = run_id({"kind": "generation", "model": name, "batch": batch, "prompt_len": cfg.prompt_len,
                          "gen_len": cfg.gen_len, "dtype": cfg.dtype, "device": env["device"],
                          "model_config": dataclasses.asdict(cfg.models[name])})
            for r in rows:
                r["run_id"] = rid
            write_rows(rows_path(cfg.results_root, cfg.study, rid), rows)
            all_rows += rows
    return all_rows


@torch.no_grad()
def _greedy_agreement(model, prompt: torch.Tensor, tokens: torch.Tensor) -> float:
    """Share of the generated tokens equal to argmax of forward() on the sequence so far (1.0 = all)."""
    seq = torch.cat([prompt, tokens[:, :-1]], dim=1)
    logits = model(seq)[:, prompt.shape[1] - 1:]
    return float((logits.argmax(-1) == tokens).float().mean())


def _state_bytes_per_sequence(model, capacity, device, dtype) -> int:
    """Decode state of one sequence: the KV cache (Transformer) or the conv + SSM states (Mamba)."""
    return model.allocate_cache(1, capacity, torch.device("meta"), dtype).nbytes()


def _run_point(name, model, batch, modes, cfg, device, dtype, gen, clock, oom_at, base) -> list[dict]:
    rows = []

    def row(mode, **kw):
        r = {**base, "cuda_graph": mode, "status": "ok", "error": "",
             "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"), **kw}
        rows.append(r)
        if r["status"] == "ok":
            log.info("%-12s batch %5d %-6s: %10.0f tok/s end-to-end, %10.0f tok/s decode, peak %.2f GiB",
                     name, batch, "graph" if mode else "eager", r["tokens_per_s"], r["decode_tokens_per_s"],
                     r["peak_mem_bytes"] / 2**30)
        else:
            log.info("%-12s batch %5d %-6s: %s (%s)", name, batch, "graph" if mode else "eager", r["status"],
                     r["error"])
        return r

    if name in oom_at:
        for mode in modes:
            row(mode, status="oom", error=f"not run: out of memory already at batch {oom_at[name]}")
        return rows
    if clock.over():
        for mode in modes:
            row(mode, status="skipped", error=f"time budget of {cfg.budget_s} s spent")
        return rows
    dec = snap = None
    done = set()
    try:
        reset_peak_memory(device)
        dec = make_decoder(model, batch, cfg.prompt_len + cfg.gen_len, device, dtype)
        prompt = torch.randint(0, cfg.vocab_size, (batch, cfg.prompt_len), generator=gen, device=device)
        synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            first = dec.prefill(prompt, cfg.prefill_batch).argmax(-1)
        synchronize(device)
        prefill_s = time.perf_counter() - t0
        prefill_peak = allocator_peak(device)
        snap = dec.snapshot()
        eager_tokens = None
        for mode in modes:
            if mode and device.type != "cuda":
                row(mode, status="unavailable", error="CUDA graphs need a CUDA device")
                done.add(mode)
                continue
            if mode and not dec.graphable:
                row(mode, status="unavailable", error="the model's positions (pos_emb) are not graph-safe")
                done.add(mode)
                continue
            dec.restore(snap)
            reset_peak_memory(device)
            out = decode(dec, first, cfg.gen_len, mode)
            peak = max(prefill_peak, allocator_peak(device))
            total = prefill_s + out["decode_s"]
            extra = {}
            if eager_tokens is not None and mode:
                extra["tokens_match_eager"] = float((out["tokens"] == eager_tokens).float().mean())
            if not mode:
                eager_tokens = out["tokens"]
            attn = getattr(dec, "attn_impl", None)
            if attn is not None and mode:
                attn = "sdpa_masked"
            row(mode, prefill_s=prefill_s, decode_s=out["decode_s"], capture_s=out["capture_s"], total_s=total,
                decode_ms_per_token=1e3 * out["decode_s"] / (cfg.gen_len - 1),
                tokens_per_s=batch * cfg.gen_len / total,
                decode_tokens_per_s=batch * (cfg.gen_len - 1) / out["decode_s"],
                peak_mem_bytes=peak, state_bytes=dec.state_bytes(), attn_impl=attn or "",
                decode_backend=_decode_backend(model, device), **extra)
            done.add(mode)
    except Exception as e:
        oom = is_out_of_memory(e)
        if oom:
            oom_at[name] = batch
        msg = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"[:500]
        log.debug("generation %s batch %d failed", name, batch, exc_info=not oom)
        for mode in modes:
            if mode not in done:
                row(mode, status="oom" if oom else "error", error=msg, peak_mem_bytes=allocator_peak(device))
    finally:
        dec = snap = None
        free_memory(device)
    return rows


def _decode_backend(model, device) -> str:
    if not all(isinstance(b, MambaBlock) for b in model.blocks):
        return ""
    from ssmbench.kernels.selective_scan.decode import resolve_decode_backend
    from ssmbench.models.layers.s6 import decode_backend
    try:
        return resolve_decode_backend(decode_backend(model.blocks[0].layer.scan_backend), device)
    except Exception as e:
        return f"unavailable ({e})"
