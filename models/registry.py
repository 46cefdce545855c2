"""Names -> classes for sequence layers ("layer") and the blocks around them ("arch").

Table 1 of the Mamba paper crosses architectures with inner layers, so the two are separate config choices:
`model.arch=mamba model.layer.name=s4` builds a Mamba block around an LTI S4 layer. Each layer module defines
its class and an options dataclass whose fields are exactly the layer's keyword arguments; `layer_options`
checks a config against that dataclass, so a mistyped key or a wrong type fails at start-up, naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
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


@dataclass
class LayerSpec:
    name: str
    options: Any
