"""Names -> classes for the sequence layers ("layer"), and the options check that builds them.

Each layer module defines its class and an options dataclass whose fields are exactly the layer's keyword
arguments; `layer_options` checks a config against that dataclass, so a mistyped key or a wrong type fails at
start-up, naming it. The blocks build their inner layer here (`build_layer`); the blocks' own table ("arch") is
registry.py, which imports the blocks.
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


@dataclass
class LayerSpec:
    name: str
    options: Any
