"""Names -> classes for sequence layers ("layer") and the blocks around them ("arch").

Table 1 of the Mamba paper crosses architectures with inner layers, so the two are separate config choices:
`model.arch=mamba model.layer.name=s4` builds a Mamba block around an LTI S4 layer. Each layer module defines
its class and an options dataclass whose fields are exactly the layer's keyword arguments; `layer_options`
checks a config against that dataclass, so a mistyped key or a wrong type fails at start-up, naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

# name -> (module under ssmbench.models.layers, class, options dataclass). Imported lazily so that a layer with
# heavy imports costs nothing until used.
LAYERS: dict[str, tuple[str, str, str]] = {
    "attention": ("attention", "Attention", "AttentionOptions"),
    "s4": ("s4", "S4Layer", "S4Options"),
    "hyena": ("hyena", "HyenaFilterLayer", "HyenaOptions"),
    "s6": ("s6", "S6Layer", "S6Options"),
    "rnn": ("rnn", "RNNLayer", "RNNOptions"),
}

# name -> block class in ssmbench.models.blocks. "nogate", "h3" and "mamba" take any inner layer (Table 1);
# "transformer" wraps a layer with an MLP (attention by default); "rnn" stacks recurrent layers with an MLP.
ARCHS: dict[str, str] = {
    "nogate": "NoGateBlock",
    "h3": "H3Block",
    "mamba": "MambaBlock",
    "transformer": "TransformerBlock",
    "rnn": "TransformerBlock",
}


class ConfigError(ValueError):
    """A model config names something that does not exist or has a bad value; the message names the key."""


def _layer_module(name: str):
    if name not in LAYERS:
        raise ConfigError(f"model.layer.name={name!r} is not a known layer; allowed: {sorted(LAYERS)}")
    module, cls, opts = LAYERS[name]
    mod = importlib.import_module(f"ssmbench.models.layers.{module}")
    return getattr(mod, cls), getattr(mod, opts)


def layer_options(name: str, options: dict[str, Any], key: str = "model.layer") -> Any:
    """Validate `options` for layer `name`, returning the filled options dataclass."""
    _, opts_cls = _layer_module(name)
    fields = {f.name: f for f in dataclasses.fields(opts_cls)}
    for k, v in options.items():
        if k not in fields:
            raise ConfigError(f"{key}.{k}: unknown option for layer {name!r}; allowed: {sorted(fields)}")
    try:
        from omegaconf import OmegaConf
        # OmegaConf checks types against the dataclass annotations and names the offending key.
        merged = OmegaConf.merge(OmegaConf.structured(opts_cls), options)
        return OmegaConf.to_object(merged)
    except ImportError:  # pragma: no cover - omegaconf is a dependency; this keeps the models usable alone
        return opts_cls(**options)
    except Exception as e:  # omegaconf.ValidationError and friends carry the offending key
        sub = getattr(e, "full_key", None)
        where = f"{key}.{sub}" if sub else key
        raise ConfigError(f"{where}: {str(e).splitlines()[0]} (layer {name!r})") from e


def build_layer(name: str, d_model: int, options: dict[str, Any] | Any | None = None):
    layer_cls, opts_cls = _layer_module(name)
    if options is None:
        options = {}
    if not dataclasses.is_dataclass(options):
        options = layer_options(name, dict(options))
    return layer_cls(d_model, **dataclasses.asdict(options))


def block_class(arch: str):
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is not a known block; allowed: {sorted(ARCHS)}")
    from . import blocks
    return getattr(blocks, ARCHS[arch])


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


@dataclass
class LayerSpec:
    name: str
    options: Any
