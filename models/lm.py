"""The language model every task trains: embedding -> blocks -> final norm -> head.

    logits = model(inputs)                              # Long[B, L] -> Float[B, L, V], causal
    cache = model.allocate_cache(batch, max_len)        # every block's state / KV cache, preallocated
    last = model.prefill(prompt, cache)                 # Long[B, P] -> logits of position P-1, Float[B, V]
    logits_t = model.step(inputs[:, t], cache)          # Long[B] -> Float[B, V]; one token; agrees with forward()
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssmbench.kernels.common.options import option

from .blocks import make_norm
from .layers.base import KVCache, ssm_parameter_names
from .registry import ConfigError, block_class, layer_options

POS_EMBS = ("none", "sinusoidal", "learned")


@dataclass
class ModelConfig:
    """What `model=` selects. `layer` holds the inner layer's name and its options, e.g. {name: s6, d_state: 16}."""

    name: str = "mamba"
    arch: str = "mamba"  # nogate | h3 | mamba | transformer | rnn
    layer: dict[str, Any] = field(default_factory=lambda: {"name": "s6"})
    d_model: int = 64
    n_layers: int = 2
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    pos_emb: str = "none"  # none | sinusoidal | learned (absolute positions added to the embedding)
    max_len: int = 4096  # only for pos_emb=learned
    mlp_ratio: int = 4  # transformer / rnn blocks; 0 for none
    expand: int = 2  # mamba block
    d_conv: int = 4  # mamba block
    shift_d_state: int = 4  # h3 block
    tie_embeddings: bool = False


def sinusoidal(positions: torch.Tensor, d: int) -> torch.Tensor:
    half = d // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device).float() / half)
    ang = positions.float()[:, None] * freq[None]
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return nn.functional.pad(emb, (0, d - 2 * half))


def validate_model_config(cfg: ModelConfig) -> dict[str, Any]:
    """Check names and sizes; returns the validated layer options. Raises ConfigError naming the key."""
    block_class(cfg.arch)
    layer = dict(cfg.layer)
    if "name" not in layer:
        raise ConfigError("model.layer.name is missing; it names the sequence layer (attention, rnn, s4, hyena, s6)")
    name = layer.pop("name")
    for key in ("d_model", "n_layers", "expand", "d_conv", "max_len"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"model.{key} must be > 0, got {getattr(cfg, key)}")
    if cfg.pos_emb not in POS_EMBS:
        raise ConfigError(f"model.pos_emb={cfg.pos_emb!r} is not one of {POS_EMBS}")
    if cfg.norm not in ("rmsnorm", "layernorm"):
        raise ConfigError(f"model.norm={cfg.norm!r} is not one of ('rmsnorm', 'layernorm')")
    return {"name": name, "options": layer_options(name, layer)}


class InferenceCache:
    """What LanguageModel.allocate_cache returns: `blocks[i]` is block i's cache (a tensor, a tuple, a KVCache),
    all allocated for `batch` sequences of up to `max_len` tokens and written in place by prefill() and step();
    `length` counts the tokens the sequences hold."""

    def __init__(self, blocks: list, batch: int, max_len: int):
        self.blocks, self.batch, self.max_len = blocks, batch, max_len
        self.length = 0
        self._graph_safe = False
        self._pos = self._mask = None  # the device-side position and mask while graph_safe

    def leaves(self) -> list:
        """The tensors and KVCaches in the cache."""
        out, todo = [], list(self.blocks)
        while todo:
            c = todo.pop(0)
            if isinstance(c, (tuple, list)):
                todo[:0] = c
            elif c is not None:
                out.append(c)
        return out

    def _kv(self) -> list[KVCache]:
        return [c for c in self.leaves() if isinstance(c, KVCache)]

    def nbytes(self) -> int:
        """Memory the cache takes (a KV cache counts its buffers)."""
        return sum(c.nbytes() if isinstance(c, KVCache) else c.numel() * c.element_size() for c in self.leaves())

    def seek(self, length: int) -> None:
        """Set the length (every KV cache's too); what lies past it is overwritten by the next steps."""
        self.length = length
        for kv in self._kv():
            kv.length = length
        if self._pos is not None:
            self._pos.fill_(length)

    def snapshot(self):
        """What restore() needs to bring the cache back here: recurrent states are cloned, a KV cache keeps only
        its length (later steps write past it, so the positions before it stay as they are)."""
        return self.length, [None if isinstance(c, KVCache) else c.clone() for c in self.leaves()]

    def restore(self, snap) -> None:
        for c, saved in zip(self.leaves(), snap[1]):
            if saved is not None:
                c.copy_(saved)
        self.seek(snap[0])

    @property
    def graph_safe(self) -> bool:
        """Steps for a CUDA graph: a replayed step cannot read the host-side length, so the KV caches write at a
        device-side position shared by all of them and attend under a mask of the filled positions, both
        updated on the device once per step(). `length` then counts the step() calls but not the replays;
        seek() and restore() set both."""
        return self._graph_safe

    @graph_safe.setter
    def graph_safe(self, on: bool) -> None:
        if on == self._graph_safe:
            return
        self._graph_safe = on
        kvs = self._kv()
        self._pos = self._mask = None
        if on and kvs:
            self._positions = kvs[0].positions
            self._pos = torch.full((1,), self.length, dtype=torch.long, device=self._positions.device)
            self._mask = torch.zeros(self.max_len, dtype=torch.bool, device=self._positions.device)
        for kv in kvs:
            kv.device_pos = self._pos
            kv.device_mask = None if self._mask is None else self._mask.view(1, 1, 1, -1)

    def _before_step(self) -> None:
        if self._mask is not None:  # graph-safe: the positions filled once this token is written
            torch.le(self._positions, self._pos, out=self._mask)

    def _after_step(self) -> None:
        self.length += 1  # (each KV cache counted its own)
        if self._pos is not None:
            self._pos.add_(1)


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        spec = validate_model_config(cfg)
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model) if cfg.pos_emb == "learned" else None
        # Small embeddings (std 0.02, as in GPT-2 and Mamba's reference LM) keep the residual stream from drowning
        # the blocks' outputs at the start; with torch's N(0, 1) default, Mamba sat at chance on selective copying
        # for ~300 steps longer.
        for emb in (self.embed, self.pos):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        if cfg.pos_emb == "sinusoidal":
            # The sinusoids have unit amplitude (RMS 0.71 a dimension), 35x these tokens: at init the token carries
            # 0.08% of the residual stream, and MHA-Abs built this way stayed at chance on induction heads where
            # the same model with learned positions, or with RoPE, learns (results/induction_probes/
            # abs_cpu_probe_notes.md). Kept as it was, so the runs trained with it keep their meaning.
            warnings.warn("model.pos_emb=sinusoidal: the unit-amplitude sinusoids are ~35x the token embeddings "
                          "(init std 0.02) and drown them; attention with them did not learn induction heads. "
                          "Use model.pos_emb=learned (model=transformer_abs) unless reproducing those runs.",
                          stacklevel=2)
        block = block_class(cfg.arch)
        try:
            self.blocks = nn.ModuleList(
                block(cfg.d_model, spec["name"], spec["options"], norm=cfg.norm, mlp_ratio=cfg.mlp_ratio,
                      expand=cfg.expand, d_conv=cfg.d_conv, shift_d_state=cfg.shift_d_state)
                for _ in range(cfg.n_layers))
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.norm = make_norm(cfg.norm, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _embed(self, inputs: torch.Tensor, start: int = 0) -> torch.Tensor:
        """inputs Long[B, T] at positions start, ..., start + T - 1 -> [B, T, d_model]."""
        x = self._lookup(inputs)
        if self.cfg.pos_emb != "none":  # (no position tensor otherwise: a decode step launches no kernel for it)
            positions = torch.arange(start, start + inputs.shape[1], device=inputs.device)
            if self.cfg.pos_emb == "sinusoidal":
                x = x + sinusoidal(positions, self.cfg.d_model).to(x.dtype)
            else:
                x = x + self.pos(positions)
        return x

    def _lookup(self, inputs: torch.Tensor) -> torch.Tensor:
        """The token embedding. With SSMBENCH_EMBED=onehot (kernels/common/options.py) and a vocabulary of at most
        256, a one-hot GEMM: the same rows exactly (each output sums one 1.0 * w and zeros, in fp32 without
        autocast), and its backward is one GEMM where nn.Embedding's sorts all B * T indices (0.45 ms a step at
        Table 1's shape, results/training/README.md). Full fp32 GEMMs only: with TF32 allowed the rows would round,
        so then it stays nn.Embedding."""
        w = self.embed.weight
        if (option("SSMBENCH_EMBED") == "onehot" and w.shape[0] <= 256 and w.dtype == torch.float32
                and torch.get_float32_matmul_precision() == "highest"):
            with torch.autocast(inputs.device.type, enabled=False):
                return F.one_hot(inputs, w.shape[0]).to(w.dtype) @ w
        return self.embed(inputs)

    def _check_length(self, length: int) -> None:
        # Checked on the host from the shape (reading positions.max() would make the host wait for the GPU,
        # which a captured training step cannot do).
        if self.cfg.pos_emb == "learned" and length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds model.max_len={self.cfg.max_len} "
                             "of the learned positional embedding")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._check_length(inputs.shape[1])
        x = self._embed(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    # -- inference --------------------------------------------------------------------------------------------

    def allocate_cache(self, batch: int, max_len: int, device=None, dtype=None) -> InferenceCache:
        """Every block's cache for `batch` sequences of up to `max_len` tokens, allocated once (a KV cache of
        max_len positions for attention); device and dtype default to the embedding's (the activations')."""
        self._check_length(max_len)
        device = self.embed.weight.device if device is None else torch.device(device)
        dtype = self.embed.weight.dtype if dtype is None else dtype
        return InferenceCache([b.allocate_cache(batch, max_len, device, dtype) for b in self.blocks], batch, max_len)

    def prefill(self, tokens: torch.Tensor, cache: InferenceCache, micro_batch: int | None = None) -> torch.Tensor:
        """tokens Long[B, P] -> logits of the last position [B, V]: the parallel forward, leaving `cache` as P
        steps from empty would (whatever it held before). Only the last position goes through the head: that is
        all generation needs, and logits [B, P, V] of a long prompt can outweigh the model. `micro_batch` runs
        the rows that many at a time, which bounds the activations' memory."""
        B, P = tokens.shape
        if B != cache.batch:
            raise ValueError(f"prefill of {B} sequences into a cache allocated for batch={cache.batch}")
        if P > cache.max_len:
            raise ValueError(f"a prompt of {P} tokens exceeds the cache's max_len={cache.max_len}")
        mb = micro_batch or B
        out = []
        for b0 in range(0, B, mb):
            rows = slice(b0, min(B, b0 + mb))
            x = self._embed(tokens[rows])
            for block, c in zip(self.blocks, cache.blocks):
                x = block.prefill(x, c, rows)
            out.append(self.head(self.norm(x[:, -1])))
        cache.seek(P)
        return torch.cat(out)

    def step(self, tokens: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """tokens Long[B] -> logits [B, V] of the next position; advances `cache` by one token in place.
        With `cache.graph_safe` the step reads no host-side position and can be captured in a CUDA graph."""
        if cache.length >= cache.max_len:
            raise ValueError(f"cache full: it holds max_len={cache.max_len} tokens; allocate_cache with a larger "
                             "max_len to generate more")
        if cache.graph_safe:
            if self.cfg.pos_emb != "none":
                raise ValueError(f"model.pos_emb={self.cfg.pos_emb!r} reads a host-side position: a step cannot be "
                                 "graph-captured")
            x = self.embed(tokens)
            cache._before_step()
        else:
            x = self._embed(tokens[:, None], cache.length)[:, 0]
        for block, c in zip(self.blocks, cache.blocks):
            x = block.step(x, c)
        cache._after_step()
        return self.head(self.norm(x))

    def param_groups(self, weight_decay: float, ssm_lr: float | None = None) -> list[dict]:
        """AdamW groups: SSM parameters (A, D, dt bias, S4's B/C/dt...), norms, biases and embeddings go without
        weight decay; everything else decays. An SSM parameter may carry its own learning rate (S4 tags A, B and
        dt with `_optim = {"lr": lr_ssm}`, as the S4 code does); `ssm_lr`, when given, overrides them all."""
        ssm = ssm_parameter_names(self)
        decay, no_decay, ssm_params = [], [], {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name in ssm:
                lr = ssm_lr if ssm_lr is not None else getattr(p, "_optim", {}).get("lr")
                ssm_params.setdefault(lr, []).append(p)
            elif p.dim() < 2 or "embed" in name or "pos." in name or "norm" in name:
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
                  {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
        for lr, params in ssm_params.items():
            g = {"params": params, "weight_decay": 0.0, "name": "ssm" if lr is None else f"ssm_lr{lr:g}"}
            if lr is not None:
                g["lr"] = lr
            groups.append(g)
        return groups

    def num_parameters(self) -> int:
        seen = {id(p): p for p in self.parameters()}
        return sum(p.numel() for p in seen.values())
