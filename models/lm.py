"""The language model every task trains: embedding -> blocks -> final norm -> head.

    logits = model(inputs)                              # Long[B, L] -> Float[B, L, V], causal
    state = model.init_state(batch_size, device)
    logits_t, state = model.step(inputs[:, t], state)   # one token; agrees with forward()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .blocks import make_norm
from .layers.base import ssm_parameter_names
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

    def _embed(self, inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed(inputs)
        if self.cfg.pos_emb == "sinusoidal":
            x = x + sinusoidal(positions, self.cfg.d_model).to(x.dtype)
        elif self.cfg.pos_emb == "learned":
            x = x + self.pos(positions)
        return x

    def _check_length(self, length: int) -> None:
        # Checked on the host from the shape (reading positions.max() would make the host wait for the GPU,
        # which a captured training step cannot do).
        if self.cfg.pos_emb == "learned" and length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds model.max_len={self.cfg.max_len} "
                             "of the learned positional embedding")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self._check_length(inputs.shape[1])
        x = self._embed(inputs, torch.arange(inputs.shape[1], device=inputs.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def init_state(self, batch_size: int, device, dtype: torch.dtype = torch.float32):
        return {"t": 0, "blocks": [b.init_state(batch_size, device, dtype) for b in self.blocks]}

    def step(self, tokens: torch.Tensor, state):
        """tokens: Long[B] -> logits Float[B, V], and the next state."""
        self._check_length(state["t"] + 1)
        x = self._embed(tokens[:, None], torch.tensor([state["t"]], device=tokens.device))[:, 0]
        new_states = []
        for block, s in zip(self.blocks, state["blocks"]):
            x, s = block.step(x, s)
            new_states.append(s)
        return self.head(self.norm(x)), {"t": state["t"] + 1, "blocks": new_states}

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
