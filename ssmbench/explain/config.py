"""The schema of `ssmbench-explain` (conf/explain.yaml), registered in Hydra's ConfigStore as `explain_schema`.

A mistyped key (`scan.lenghts=[64]`) or a wrong type (`seed=zero`) fails before any work, naming the key; values
are then checked by `validate` (again naming the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from ssmbench.config import register_configs
from ssmbench.models.lm import ModelConfig

# The figures, in the order of the visual guide to Mamba (docs/explain.md). Each is one file stem under
# <out_root>/<name>/ (PNG and PDF).
FIGURES = ("1a_hippo", "1b_s4_two_views", "1c_zoh", "2_selectivity", "3a_state_norms", "3b_attention",
           "4a_scan_order", "4b_scan_memory")

# The figure models, by role: which fresh model each role builds (conf/model/<name>.yaml, under `models.<role>`),
# and which sequence layer a kept model must have to take the role's place.
ROLES = {"mamba": "s6", "s4": "s4", "lstm": "rnn", "transformer": "attention"}


class ExplainConfigError(ValueError):
    """A bad value; the message names the key."""


@dataclass
class InputsConfig:
    """The sequences the models read. None: the kept model's own task length (when it was trained on that task),
    else the default noted."""

    seq_len: Optional[int] = None  # selective-copying sequence (figures 1b, 2, 3a); fresh default 64
    n_data: int = 8  # data tokens in it (a kept selective-copying model brings its own)
    vocab_size: int = 16  # fresh models and tasks (a kept model brings its own)
    induction_len: Optional[int] = None  # induction-heads sequence (figure 3b); fresh default 32


@dataclass
class SSMFigures:
    hippo_n: int = 32  # HiPPO-LegS state size for the reconstruction (figure 1a)
    hippo_small_n: int = 8  # a smaller state, reconstructed beside it
    heatmap_n: int = 16  # size of the A and A-bar heatmaps (figures 1a, 1c)
    signal_len: int = 1000  # samples of the 1-D signal, one HiPPO update each
    dts: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])  # step sizes of figure 1c
    channels: int = 2  # S4 channels drawn in figure 1b


@dataclass
class ScanFigures:
    diagram_len: int = 8  # elements of the combine-order diagram (a power of two)
    lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    reference_max_len: int = 2048  # the reference loop's backward is slow: no point above this
    batch: int = 1
    dim: int = 32  # scan channels (a Mamba layer's d_inner)
    d_state: int = 16
    chunk: int = 32  # steps between the states the recomputing scan keeps (as the Triton backend)


@dataclass
class ExplainConfig:
    name: str = "fresh"  # output folder: <out_root>/<name>/
    out_root: str = "results/explain"
    model_path: Optional[str] = None  # a kept model (<results_root>/<study>/runs/<run_id>/model.pt); None: all fresh
    seed: int = 0  # fresh models' initialisation and the sampled sequences
    threads: int = 1  # torch threads (the figures are small; one thread keeps a shared machine responsive)
    block: int = 0  # which block's sequence layer figures 1b, 2 and 3a read (3b reads the last block)
    figures: list[str] = field(default_factory=lambda: list(FIGURES))
    models: dict[str, ModelConfig] = field(default_factory=dict)  # role -> fresh model (filled by explain.yaml)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    ssm: SSMFigures = field(default_factory=SSMFigures)
    scan: ScanFigures = field(default_factory=ScanFigures)


def validate(cfg: ExplainConfig) -> None:
    for f in cfg.figures:
        if f not in FIGURES:
            raise ExplainConfigError(f"figures: {f!r} is not one of {list(FIGURES)}")
    for role in cfg.models:
        if role not in ROLES:
            raise ExplainConfigError(f"models.{role}: unknown role; roles: {list(ROLES)}")
    for role in ROLES:
        if role not in cfg.models:
            raise ExplainConfigError(f"models.{role} is missing (conf/explain.yaml fills it from conf/model/)")
    positive = {"threads": cfg.threads, "inputs.n_data": cfg.inputs.n_data, "ssm.hippo_n": cfg.ssm.hippo_n,
                "ssm.hippo_small_n": cfg.ssm.hippo_small_n, "ssm.heatmap_n": cfg.ssm.heatmap_n,
                "ssm.signal_len": cfg.ssm.signal_len, "ssm.channels": cfg.ssm.channels, "scan.batch": cfg.scan.batch,
                "scan.dim": cfg.scan.dim, "scan.d_state": cfg.scan.d_state, "scan.chunk": cfg.scan.chunk,
                "scan.reference_max_len": cfg.scan.reference_max_len}
    for key in ("seq_len", "induction_len"):
        if getattr(cfg.inputs, key) is not None:
            positive[f"inputs.{key}"] = getattr(cfg.inputs, key)
    for key, v in positive.items():
        if v <= 0:
            raise ExplainConfigError(f"{key} must be > 0, got {v}")
    if cfg.block < 0:
        raise ExplainConfigError(f"block must be >= 0, got {cfg.block}")
    if cfg.inputs.vocab_size < 3:
        raise ExplainConfigError(f"inputs.vocab_size must be >= 3, got {cfg.inputs.vocab_size}")
    n = cfg.scan.diagram_len
    if n < 2 or n & (n - 1):
        raise ExplainConfigError(f"scan.diagram_len must be a power of two >= 2, got {n}")
    if not cfg.scan.lengths or any(L <= 0 for L in cfg.scan.lengths):
        raise ExplainConfigError(f"scan.lengths must be a non-empty list of positive lengths, got {cfg.scan.lengths}")
    if not cfg.ssm.dts or any(dt <= 0 for dt in cfg.ssm.dts):
        raise ExplainConfigError(f"ssm.dts must be a non-empty list of positive step sizes, got {cfg.ssm.dts}")


def register_explain_configs() -> None:
    register_configs()  # the model group's schema (model/model_schema), which explain.yaml's models use
    ConfigStore.instance().store(name="explain_schema", node=ExplainConfig)
