"""Names -> classes for sequence layers ("layer") and the blocks around them ("arch").

Table 1 of the Mamba paper crosses architectures with inner layers, so the two are separate config choices:
`model.arch=mamba model.layer.name=s4` builds a Mamba block around an LTI S4 layer. The layers' table and its
options check live in layer_registry.py (which the blocks import to build their inner layer); they are importable
from here too. This module holds the blocks' table, and imports the blocks.
"""

from __future__ import annotations

import inspect
from typing import Any

from .blocks import H3Block, MambaBlock, NoGateBlock, TransformerBlock
from .layer_registry import LAYERS, ConfigError, LayerSpec, build_layer, layer_options

__all__ = ["ARCHS", "BLOCK_COMMON", "LAYERS", "ConfigError", "LayerSpec", "block_class", "block_keys", "build_layer",
           "check_block_keys", "layer_options"]

# name -> block class (models/blocks.py). "nogate", "h3" and "mamba" take any inner layer (Table 1);
# "transformer" wraps a layer with an MLP (attention by default); "rnn" stacks recurrent layers with an MLP.
ARCHS: dict[str, type] = {
    "nogate": NoGateBlock,
    "h3": H3Block,
    "mamba": MambaBlock,
    "transformer": TransformerBlock,
    "rnn": TransformerBlock,
}


def block_class(arch: str) -> type:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is not a known block; allowed: {sorted(ARCHS)}")
    return ARCHS[arch]


# What every block constructor takes; any further keyword is a model key that only some blocks use.
BLOCK_COMMON = ("d_model", "layer", "layer_options", "norm")


def block_keys(arch: str) -> tuple[str, ...]:
    """The model keys block `arch` uses besides d_model and norm (expand, d_conv, shift_d_state, mlp_ratio...),
    read from its constructor's named parameters: the `**_` that takes the other blocks' keys is not one."""
    params = inspect.signature(block_class(arch).__init__).parameters.values()
    return tuple(p.name for p in params if p.name != "self" and p.name not in BLOCK_COMMON
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_block_keys(arch: str, values: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Every model passes all block keys to its blocks, and a block ignores the ones it does not use: reject a key
    that block `arch` does not use when it is set away from its default (`model=transformer model.expand=4`)."""
    used = set(block_keys(arch))
    users: dict[str, list[str]] = {}
    for a in sorted(ARCHS):
        for k in block_keys(a):
            users.setdefault(k, []).append(a)
    for k in sorted(users):
        if k in used or k not in values or k not in defaults or values[k] == defaults[k]:
            continue
        raise ConfigError(f"model.{k}={values[k]} is not used by arch={arch} (used by: {', '.join(users[k])}); "
                          f"leave it at its default ({defaults[k]})")
