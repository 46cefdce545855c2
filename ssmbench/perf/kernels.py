"""Kernel profiling: every op through every backend that can run here, timed over a sweep of sequence lengths.

    rows = run_profile(ProfileConfig(...))      # what `ssmbench-profile` runs (ssmbench/perf/cli.py)

Presets (conf/profile/): kernels (every backend over L, the default), targets (the kernels' speed targets, with
the official kernel's times beside them), cpu_smoke (toy sizes).

Ops and their backends (the registry `OPS`; each op builds its inputs for a shape and returns callables). The
kernel ops time every row of their backend table (SCAN_TABLE, CONV_TABLE: kernels/<op>/table.py), which also
ranks their series (`priority`):
  selective_scan  triton (fused), mamba_ssm (official CUDA kernel, when importable), torch (chunked scan),
                  reference (the sequential loop)
  causal_conv1d   triton, torch (F.conv1d, the reference)
  s4_fft_conv     torch_fft (the FFT convolution y = irfft(rfft(u) rfft(k)) + D u with a given kernel k),
                  s4d_layer (the whole S4D layer forward: Vandermonde kernel, then the FFT convolution)
  attention       causal, head dim 64, heads = dim / 64 (the same width as the scan): flash_attn (when
                  importable), sdpa_flash, sdpa_cudnn, sdpa_efficient, sdpa_math (PyTorch SDPA, one backend each)
Shapes follow the Mamba paper's Figure 8 (left): u, delta, z [batch, dim, L]; B, C [batch, 1, N, L]; the same
[batch, L, dim] activations for the convolutions and q, k, v [batch, dim/64, L, 64] for attention.

Shapes. Each entry of `shapes` may name its own lengths, passes, dtypes and backends (None: the profile's), and
force the Triton scan's long-sequence path on or off (`long_sequence`); `name` labels its rows (shape_name).

Official times. Every selective_scan row of a backend other than mamba_ssm carries the official mamba_ssm
kernel's time at its point (official_ms, official_source, official_csv, vs_official; ssmbench/perf/official.py):
measured in this process when the profile ran the mamba_ssm series there, else read from `official_csv` (default:
the committed ssmbench/reference/h200_official_kernels.csv). The rows are written once measured, with the CSV's
time; when the official series measures the same point later in the run, the rows are rewritten with it.

Timing (ssmbench/perf/timing.py time_call). On CUDA, `triton.testing.do_bench` (L2 flushed between calls,
gradients reset): the median and the 20th and 80th percentiles of all its samples. Calls slower than `slow_ms`
are timed with CUDA events over a few calls instead (do_bench would spend 5 calls just estimating). On the CPU,
a perf_counter loop. "fwd" runs under no_grad; "fwdbwd" is forward then backward of a random output gradient
into every floating input.

Bandwidth. Each op says how many bytes it cannot avoid moving (`bytes_fwd` / `bytes_fwdbwd`: every input read
once and every output written once; the backward reads the inputs and the output gradient again and writes one
gradient per input; nothing intermediate counts). achieved = bytes / median time, and `bw_frac` compares it to
the device's copy bandwidth (bytes read + written by a large device-to-device copy) measured in the same run.
For attention (compute-bound) the rows also carry FLOPs and TFLOP/s. Memory: `io_bytes` is what must be
resident (inputs and outputs; fwdbwd adds the output gradient and the input gradients) and, on CUDA,
`peak_over_io` = the allocator's peak during one call / io_bytes.

Robustness. A point that runs out of memory is a row with status "oom" (and the longer lengths of that series
are not tried: "oom" with error "not run: ..."); a backend that cannot run here is "unavailable" with the
reason; a point beyond its backend's length limit, predicted (from the previous length) to take longer than
`max_call_ms` per call, or past the run's time budget is "skipped" with the reason; anything else that fails is
"error" with the message. The sweep always goes on.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ssmbench.env import environment
from ssmbench.env import resolve_device as _resolve_device
from ssmbench.kernels.causal_conv1d.table import CONV_TABLE
from ssmbench.kernels.common.dispatch import BackendTable
from ssmbench.kernels.selective_scan.table import SCAN_TABLE
from ssmbench.metrics import is_out_of_memory
from ssmbench.results import read_rows, rows_path, run_id, write_rows

from .official import OfficialTimes, is_official, takes_official
from .timing import DTYPES, Budget, copy_bandwidth_gbps, free_memory, peak_memory, time_call

log = logging.getLogger("ssmbench.profile")

PASSES = ("fwd", "fwdbwd")


# ---------------------------------------------------------------------------------------------------------------
# Config (the Hydra schema; registered in the ConfigStore by perf/cli.py)

@dataclass
class ShapeConfig:
    batch: int = 1
    dim: int = 1024  # scan / conv channels; attention uses dim / head_dim heads
    d_state: int = 16
    max_len: Optional[int] = None  # longest L for this shape (None: all of `lengths`)
    # This shape's own choices; None: the profile's key of the same name (`backends` replaces the profile's
    # whole op -> backends map: the ops it leaves out do not run at this shape).
    lengths: Optional[list[int]] = None
    passes: Optional[list[str]] = None
    dtypes: Optional[list[str]] = None
    backends: Optional[dict[str, list[str]]] = None
    long_sequence: Optional[bool] = None  # the Triton scan's long-sequence path: None its heuristic, true/false forced
    name: Optional[str] = None  # a label for the rows (shape_name) and the report


# ShapeConfig's keys before the per-shape ones: the others enter a series' identity (its run id) only when set, so
# the run ids of existing studies do not move.
_SHAPE_KEYS = ("batch", "dim", "d_state", "max_len")


def shape_identity(shape: ShapeConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(shape).items() if k in _SHAPE_KEYS or v is not None}


def _default_backends() -> dict[str, list[str]]:
    return {op: list(spec.backends) for op, spec in OPS.items()}


@dataclass
class ProfileConfig:
    study: str = "kernels"  # rows go to <results_root>/<study>/rows/
    results_root: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    lengths: list[int] = field(default_factory=lambda: [2 ** k for k in range(9, 20)])
    shapes: list[ShapeConfig] = field(default_factory=lambda: [ShapeConfig()])
    dtypes: list[str] = field(default_factory=lambda: ["bf16"])
    passes: list[str] = field(default_factory=lambda: ["fwd", "fwdbwd"])
    backends: dict[str, list[str]] = field(default_factory=lambda: _default_backends())  # op -> backends
    # op -> backend -> longest L to try (beyond it: "skipped"); e.g. the reference loop only at short L.
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    head_dim: int = 64
    conv_width: int = 4
    gated: bool = True  # the scan takes the gate z (as in the Mamba block)
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    slow_ms: float = 50.0  # calls slower than this: a few timed calls with CUDA events instead of do_bench
    slow_samples: int = 3
    max_call_ms: float = 1000.0  # skip a point predicted to take longer than this per call
    budget_s: Optional[float] = None  # wall-clock budget for the sweep; later points are "skipped"
    copy_bytes: int = 1 << 30  # buffer for the copy-bandwidth measurement (CUDA; the CPU uses 1/16)
    triton_interpret: bool = False  # on the CPU, run the Triton backends in the interpreter (tests only)
    seed: int = 0
    resume: bool = False  # keep the rows already measured (status ok/oom/unavailable) and measure the rest
    report: bool = True  # write the report (tables, plots) into the study folder afterwards
    # Official timings measured elsewhere (perf/official.py; None: the committed
    # ssmbench/reference/h200_official_kernels.csv): joined into the scan rows where this run did not measure
    # mamba_ssm, and drawn by the report as "(ref csv)" series where this run did not measure that implementation.
    official_csv: Optional[str] = None


class ProfileConfigError(ValueError):
    pass


def _check_choices(key: str, lengths, dtypes, passes, backends) -> None:
    """One set of lengths / dtypes / passes / op -> backends (None: not given); `key` prefixes the messages."""
    if lengths is not None and (not lengths or any(L <= 0 for L in lengths)):
        raise ProfileConfigError(f"{key}lengths must be a non-empty list of positive integers, got {lengths}")
    for d in dtypes or ():
        if d not in DTYPES:
            raise ProfileConfigError(f"{key}dtypes: {d!r} is not one of {sorted(DTYPES)}")
    for p in passes or ():
        if p not in PASSES:
            raise ProfileConfigError(f"{key}passes: {p!r} is not one of {PASSES}")
    for op, names in (backends or {}).items():
        if op not in OPS:
            raise ProfileConfigError(f"{key}{op}: unknown op; ops: {sorted(OPS)}")
        for b in names:
            if b not in OPS[op].backends:
                raise ProfileConfigError(f"{key}{op}: unknown backend {b!r}; {op} has {OPS[op].backends}")


def validate_profile(cfg: ProfileConfig) -> None:
    """Names and values, before any work; the message names the key."""
    _check_choices("", cfg.lengths, cfg.dtypes, cfg.passes, None)
    if not cfg.shapes:
        raise ProfileConfigError("shapes must not be empty")
    for i, s in enumerate(cfg.shapes):
        for k in ("batch", "dim", "d_state"):
            if getattr(s, k) <= 0:
                raise ProfileConfigError(f"shapes[{i}].{k} must be > 0, got {getattr(s, k)}")
        _check_choices(f"shapes[{i}].", s.lengths, s.dtypes, s.passes, None)
        for k in ("dtypes", "passes"):
            if getattr(s, k) is not None and not getattr(s, k):
                raise ProfileConfigError(f"shapes[{i}].{k} must not be empty (leave it out for the profile's)")
        _check_choices(f"shapes[{i}].backends.", None, None, None, s.backends)
    for section in ("backends", "limits"):
        _check_choices(f"{section}.", None, None, None, getattr(cfg, section))
    if cfg.head_dim <= 0 or cfg.conv_width <= 0:
        raise ProfileConfigError("head_dim and conv_width must be > 0")
    for k in ("rep_ms", "max_call_ms", "slow_ms"):
        if not getattr(cfg, k) > 0:
            raise ProfileConfigError(f"{k} must be > 0, got {getattr(cfg, k)}")


# ---------------------------------------------------------------------------------------------------------------
# Ops

@dataclass(frozen=True)
class Shape:
    batch: int
    dim: int
    seq_len: int
    d_state: int
    dtype: torch.dtype
    head_dim: int = 64
    conv_width: int = 4
    gated: bool = True
    long_sequence: Optional[bool] = None  # the Triton scan's long-sequence path (None: its heuristic)

    @property
    def heads(self) -> int:
        return max(1, self.dim // self.head_dim)


@dataclass
class Case:
    """One op at one shape through one backend, inputs allocated, ready to time."""
    fwd: Callable[[], Any]
    fwdbwd: Callable[[], Any]
    grads: list[torch.Tensor]  # leaves whose .grad the backward fills (reset between calls)
    bytes_fwd: int
    bytes_fwdbwd: int
    flops_fwd: float = math.nan
    flops_fwdbwd: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)
    # bytes that must be resident: inputs and outputs (fwdbwd: + output gradient + input gradients); 0: not counted
    io_fwd: int = 0
    io_fwdbwd: int = 0


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _leaves(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().requires_grad_() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in d.items()}


def _make_case(call: Callable[..., torch.Tensor], inputs: dict[str, Any], out_bytes: int) -> Case:
    """fwd (no_grad) and fwdbwd callables for call(**inputs) -> a tensor; the byte counts of the docstring."""
    leaves = _leaves(inputs)
    grads = [v for v in leaves.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    dout = {}

    def fwd():
        with torch.no_grad():
            return call(**inputs)

    def fwdbwd():
        y = call(**leaves)
        if "g" not in dout:
            dout["g"] = torch.randn_like(y)
        y.backward(dout["g"])

    in_bytes = _nbytes(*[v for v in inputs.values() if isinstance(v, torch.Tensor)])
    grad_bytes = _nbytes(*grads)
    return Case(fwd, fwdbwd, grads, in_bytes + out_bytes, 2 * in_bytes + 2 * out_bytes + grad_bytes,
                io_fwd=in_bytes + out_bytes, io_fwdbwd=in_bytes + 2 * out_bytes + grad_bytes)


def _rand(gen: torch.Generator, device, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, device=device)


# -- selective scan -----------------------------------------------------------------------------------------------

def _scan_case(backend: str, s: Shape, device: torch.device, gen: torch.Generator) -> Case:
    from ssmbench.kernels.selective_scan import selective_scan
    from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
    inputs = paper_scan_inputs(s.batch, s.dim, s.seq_len, s.d_state, s.dtype, s.gated, generator=gen)
    impl = SCAN_TABLE.profiled()[backend]

    forced = impl == "triton" and s.long_sequence is not None  # the path forced: the Triton entry point itself

    def call(**kw):
        if forced:
            from ssmbench.kernels.selective_scan.triton_scan import selective_scan_triton
            return selective_scan_triton(**kw, delta_softplus=True, long_sequence=s.long_sequence)
        return selective_scan(**kw, delta_softplus=True, backend=impl)

    case = _make_case(call, inputs, _nbytes(inputs["u"]))
    if impl == "triton":
        from ssmbench.kernels.selective_scan import triton_scan
        triton_scan.LAST_LAUNCH.clear()  # nothing left from another shape's calls
        case.info["launch"] = triton_scan.LAST_LAUNCH  # filled by the calls; copied into the row afterwards
    return case


# -- causal conv1d ------------------------------------------------------------------------------------------------

def _conv_case(backend: str, s: Shape, device: torch.device, gen: torch.Generator) -> Case:
    from ssmbench.kernels.causal_conv1d import causal_conv1d_fn
    inputs = dict(x=_rand(gen, device, s.batch, s.dim, s.seq_len).to(s.dtype),
                  weight=_rand(gen, device, s.dim, s.conv_width) * 0.5, bias=_rand(gen, device, s.dim) * 0.1)
    impl = CONV_TABLE.profiled()[backend]

    def call(x, weight, bias):
        return causal_conv1d_fn(x, weight, bias, activation="silu", backend=impl)

    return _make_case(call, inputs, _nbytes(inputs["x"]))


# -- S4 FFT convolution ---------------------------------------------------------------------------------------------

S4_D_STATE = 64  # the S4 layer's own default (legs init: 32 complex modes)


def _fft_case(backend: str, s: Shape, device: torch.device, gen: torch.Generator) -> Case:
    from ssmbench.models.layers.fftconv import fft_causal_conv
    B, L, H = s.batch, s.seq_len, s.dim
    u = _rand(gen, device, B, L, H).to(s.dtype)
    if backend == "torch_fft":
        inputs = dict(u=u, k=_rand(gen, device, H, L) * L ** -0.5, D=_rand(gen, device, H))

        def call(u, k, D):  # the S4/Hyena long convolution in fp32 (cuFFT), as the layers compute it
            return fft_causal_conv(u, k, D).to(u.dtype)

        return _make_case(call, inputs, _nbytes(u))
    from ssmbench.models.layers.s4 import S4Layer
    layer = S4Layer(H, d_state=S4_D_STATE).to(device)  # random init from the global RNG: values do not matter
    params = [p for p in layer.parameters()]
    kernel_bytes = H * L * 4  # the [H, L] fp32 kernel it builds is read by the convolution
    case = _make_case(lambda u: layer(u), dict(u=u), _nbytes(u) + kernel_bytes)
    case.grads = case.grads + params
    case.bytes_fwdbwd += 2 * kernel_bytes  # dK read back and the parameter gradients built from it
    case.info["s4_d_state"] = S4_D_STATE
    return case


# -- causal attention ------------------------------------------------------------------------------------------------

SDPA_KINDS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
              "sdpa_math": "MATH"}


def _flash_attn():
    try:
        return importlib.import_module("flash_attn")
    except Exception:
        return None


def _attn_unavailable(backend: str, s: Shape, device: torch.device) -> str | None:
    if s.dim % s.head_dim:
        return f"dim {s.dim} is not a multiple of head_dim {s.head_dim}"
    if backend == "flash_attn":
        if device.type != "cuda":
            return "flash_attn needs a CUDA device"
        if _flash_attn() is None:
            return "flash_attn is not importable"
        if s.dtype not in (torch.float16, torch.bfloat16):
            return "flash_attn needs fp16 or bf16"
        return None
    from torch.nn.attention import SDPBackend
    if not hasattr(SDPBackend, SDPA_KINDS[backend]):
        return f"this torch ({torch.__version__}) has no SDPBackend.{SDPA_KINDS[backend]}"
    return None  # whether SDPA can run it is decided by trying: "no available kernel" becomes "unavailable"


def _attn_case(backend: str, s: Shape, device: torch.device, gen: torch.Generator) -> Case:
    B, H, L, hd = s.batch, s.heads, s.seq_len, s.head_dim
    if backend == "flash_attn":
        from flash_attn import flash_attn_func
        shape = (B, L, H, hd)

        def call(q, k, v):
            return flash_attn_func(q, k, v, causal=True)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        kind = getattr(SDPBackend, SDPA_KINDS[backend])
        shape = (B, H, L, hd)

        def call(q, k, v):
            with sdpa_kernel([kind]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the "kernel not used because ..." chatter of the others
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    inputs = {n: _rand(gen, device, *shape).to(s.dtype) for n in ("q", "k", "v")}
    case = _make_case(call, inputs, _nbytes(inputs["q"]))
    # Causal: half of the L x L scores. Forward 2 matmuls, backward 5 (the usual 2.5x).
    case.flops_fwd = 2.0 * B * H * L * L * hd
    case.flops_fwdbwd = 3.5 * case.flops_fwd
    case.info["heads"] = H
    if backend == "flash_attn":
        case.info["backend_version"] = getattr(_flash_attn(), "__version__", "?")
    return case


@dataclass(frozen=True)
class OpSpec:
    listed: tuple[str, ...] | Callable[[], tuple[str, ...]]  # the backends, or a function giving them (tables)
    build: Callable[[str, Shape, torch.device, torch.Generator], Case]
    unavailable: Callable[[str, Shape, torch.device], str | None]
    length_exponent: float  # time ~ L^exponent at long L: used to predict the next length's time

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.listed()) if callable(self.listed) else tuple(self.listed)


def _always(backend, s, device):
    return None


# The ops whose backends are a kernel table's rows, under the names the table gives the profiler (`profiled`).
KERNEL_TABLES: dict[str, BackendTable] = {"selective_scan": SCAN_TABLE, "causal_conv1d": CONV_TABLE}


def _table_op(op: str, build, length_exponent: float) -> OpSpec:
    table = KERNEL_TABLES[op]

    def unavailable(backend: str, s: Shape, device: torch.device) -> str | None:
        return table.unavailable_reason(table.profiled()[backend], device)

    return OpSpec(lambda: tuple(table.profiled()), build, unavailable, length_exponent)


OPS: dict[str, OpSpec] = {
    "selective_scan": _table_op("selective_scan", _scan_case, 1.0),
    "causal_conv1d": _table_op("causal_conv1d", _conv_case, 1.0),
    "s4_fft_conv": OpSpec(("torch_fft", "s4d_layer"), _fft_case, _always, 1.1),
    "attention": OpSpec(("flash_attn", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_math"), _attn_case,
                        _attn_unavailable, 2.0),
}

# Ranks of the series of the ops without a kernel table (lowest measured first); a kernel table's rows carry theirs
# (`profile_rank`), on the same scale.
RANKS: dict[tuple[str, str], float] = {
    ("attention", "flash_attn"): 30, ("attention", "sdpa_flash"): 40, ("attention", "sdpa_cudnn"): 50,
    ("s4_fft_conv", "torch_fft"): 60, ("attention", "sdpa_efficient"): 100, ("s4_fft_conv", "s4d_layer"): 110,
    ("attention", "sdpa_math"): 120}


def priority() -> list[tuple[str, str]]:
    """The order series are measured in: what matters most first, so a run that hits its time budget loses the
    least. A kernel table's row without a rank comes after the ranked series (`series_of`)."""
    ranks = dict(RANKS)
    for op, table in KERNEL_TABLES.items():
        for label, name in table.profiled().items():
            if table.rows[name].profile_rank is not None:
                ranks[(op, label)] = table.rows[name].profile_rank
    return sorted(ranks, key=ranks.__getitem__)

FUSED = ("selective_scan", "triton")  # the implementation the report's speed-ups are relative to


def impl_label(op: str, backend: str) -> str:
    return f"{op}:{backend}"


def _backend_version(op: str, backend: str) -> str:
    table = KERNEL_TABLES.get(op)
    if table is not None:
        mod = table.rows[table.profiled()[backend]].version_of
    else:
        mod = {"flash_attn": "flash_attn"}.get(backend)
    if mod is None:
        return ""
    try:
        return getattr(importlib.import_module(mod), "__version__", "?")
    except Exception:
        return ""


# ---------------------------------------------------------------------------------------------------------------
# The sweep

def resolve_device(name: str) -> torch.device:
    return _resolve_device(name, ProfileConfigError)


def _short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def _is_unavailable_kernel(e: BaseException) -> bool:
    # SDPA with one backend forced that cannot take these inputs (wording varies across torch versions)
    return isinstance(e, RuntimeError) and any(m in str(e) for m in ("No available kernel", "No viable backend"))


@dataclass
class Series:
    """One op through one backend at one shape and dtype, over the lengths: one rows file."""
    op: str
    backend: str
    shape: ShapeConfig
    dtype: str
    shape_index: int = 0  # the shape's place in the profile's `shapes` (the report's order; not in the identity)

    def identity(self, device: torch.device, cfg: ProfileConfig) -> dict:
        return {"kind": "kernel", "op": self.op, "backend": self.backend, "shape": shape_identity(self.shape),
                "dtype": self.dtype, "device": environment(device)["device"], "head_dim": cfg.head_dim,
                "conv_width": cfg.conv_width, "gated": cfg.gated}


def series_of(cfg: ProfileConfig) -> list[Series]:
    out = []
    ranked = priority()
    for i, shape in enumerate(cfg.shapes):
        chosen = cfg.backends if shape.backends is None else shape.backends
        order = [(op, b) for op, b in ranked if b in chosen.get(op, [])]
        order += [(op, b) for op, bs in chosen.items() for b in bs if (op, b) not in order]
        out += [Series(op, b, shape, dt, i) for dt in (shape.dtypes or cfg.dtypes) for op, b in order]
    return out


def run_profile(cfg: ProfileConfig) -> list[dict]:
    """Measure every series of `cfg`, writing each series' rows (atomically) as it goes; returns all rows."""
    validate_profile(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.triton_interpret:
        import os
        os.environ["TRITON_INTERPRET"] = "1"
    env = environment(device)
    clock = Budget(cfg.budget_s)
    nbytes = cfg.copy_bytes if device.type == "cuda" else max(1, cfg.copy_bytes // 16)
    copy_gbps = copy_bandwidth_gbps(device, nbytes, cfg.warmup_ms, cfg.rep_ms)
    log.info("device %s; copy bandwidth %.1f GB/s", env["device"], copy_gbps)
    official = OfficialTimes(cfg.official_csv)
    if official.error:
        log.warning("official times: %s", official.error)
    all_rows = []
    for series in series_of(cfg):
        all_rows += _run_series(series, cfg, device, env, copy_gbps, clock, official)
        free_memory(device)
    _rejoin_official(all_rows, official, cfg)
    log.info("profile done in %.1f s: %d rows", clock.elapsed(), len(all_rows))
    return all_rows


def _rejoin_official(rows: list[dict], official: OfficialTimes, cfg: ProfileConfig) -> None:
    """The scan rows measured before the official series of their point: their official_* columns again, now that
    every official time of the run is known; the series files whose rows changed are written again."""
    changed = set()
    for r in rows:
        if not takes_official(r):
            continue
        new = official.columns(r)
        if (new["official_source"], repr(new["official_ms"])) != (r.get("official_source"), repr(r.get("official_ms"))):
            r.update(new)
            changed.add(r["run_id"])
    for rid in changed:
        write_rows(rows_path(cfg.results_root, cfg.study, rid), [r for r in rows if r["run_id"] == rid])


DONE_STATUSES = ("ok", "oom", "unavailable")


def _run_series(series: Series, cfg: ProfileConfig, device, env, copy_gbps, clock: Budget,
                official: OfficialTimes) -> list[dict]:
    spec = OPS[series.op]
    rid = run_id(series.identity(device, cfg))
    path = rows_path(cfg.results_root, cfg.study, rid)
    kept: dict[tuple[int, str], dict] = {}
    if cfg.resume and path.exists():
        try:
            kept = {(r["seq_len"], r["pass"]): r for r in read_rows(path) if r.get("status") in DONE_STATUSES}
        except (OSError, ValueError, KeyError):
            kept = {}
    s0 = series.shape
    limit = cfg.limits.get(series.op, {}).get(series.backend)
    base = {"kind": "kernel", "study": cfg.study, "run_id": rid, "op": series.op, "backend": series.backend,
            "impl": impl_label(series.op, series.backend), "batch": s0.batch, "dim": s0.dim, "d_state": s0.d_state,
            "dtype": series.dtype, "shape_index": series.shape_index, "head_dim": cfg.head_dim,
            "conv_width": cfg.conv_width, "gated": cfg.gated, "copy_gbps": copy_gbps,
            "backend_version": _backend_version(series.op, series.backend), **env}
    if s0.name is not None:
        base["shape_name"] = s0.name
    if s0.long_sequence is not None:
        base["long_sequence"] = s0.long_sequence
    rows: list[dict] = []
    last: dict[str, tuple[int, float]] = {}  # pass -> (L, median ms) of the last measured length
    oom_at: dict[str, int] = {}
    unavailable = None
    for L in sorted(s0.lengths or cfg.lengths):
        if s0.max_len is not None and L > s0.max_len:
            continue
        shape = Shape(s0.batch, s0.dim, L, s0.d_state, DTYPES[series.dtype], cfg.head_dim, cfg.conv_width, cfg.gated,
                      s0.long_sequence)
        for pas in s0.passes or cfg.passes:
            if (L, pas) in kept:
                rows.append(kept[(L, pas)])
                official.record(kept[(L, pas)], "same_study")
                if kept[(L, pas)]["status"] == "ok":
                    last[pas] = (L, kept[(L, pas)]["time_ms"])
                continue
            row = {**base, "seq_len": L, "pass": pas, "heads": shape.heads, "status": "ok", "error": "",
                   "timestamp": time.strftime("%Y-%m-%d %H:%M:%S")}
            reason = unavailable or spec.unavailable(series.backend, shape, device)
            predicted = math.nan
            if pas in last:
                L0, t0 = last[pas]
                predicted = t0 * (L / L0) ** spec.length_exponent
            if reason:
                row.update(status="unavailable", error=reason)
            elif limit is not None and L > limit:
                row.update(status="skipped", error=f"beyond this backend's length limit (limits.{series.op}."
                                                   f"{series.backend}={limit})")
            elif pas in oom_at:
                row.update(status="oom", error=f"not run: out of memory already at L={oom_at[pas]}")
            elif predicted > cfg.max_call_ms:
                row.update(status="skipped", error=f"predicted {predicted:.0f} ms per call > max_call_ms="
                                                   f"{cfg.max_call_ms:.0f} (from L={last[pas][0]})")
            elif clock.over():
                row.update(status="skipped", error=f"time budget of {cfg.budget_s} s spent")
            else:
                row.update(_measure(series, shape, pas, cfg, device, copy_gbps))
                if row["status"] == "ok":
                    last[pas] = (L, row["time_ms"])
                elif row["status"] == "oom":
                    oom_at[pas] = L
                elif row["status"] == "unavailable":
                    unavailable = row["error"]
            row["predicted_ms"] = predicted
            if is_official(row):
                official.record(row, "same_process")
            elif takes_official(row):
                row.update(official.columns(row))
            rows.append(row)
            log.info("%-28s %-6s B=%d D=%d L=%-7d %s: %s", row["impl"], pas, s0.batch, s0.dim, L, series.dtype,
                     f"{row['time_ms']:.4f} ms" if row["status"] == "ok" else f"{row['status']} ({row['error']})")
            write_rows(path, rows)
    if rows:
        write_rows(path, rows)
    return rows


def _measure(series: Series, shape: Shape, pas: str, cfg: ProfileConfig, device, copy_gbps) -> dict:
    """Build the inputs, time, measure memory; the outcome as row fields. Never raises."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + shape.seq_len)
    case = None
    t_start = time.perf_counter()
    try:
        case = OPS[series.op].build(series.backend, shape, device, gen)
        fn = case.fwd if pas == "fwd" else case.fwdbwd
        grads = case.grads if pas == "fwdbwd" else None
        t = time_call(fn, device, warmup_ms=cfg.warmup_ms, rep_ms=cfg.rep_ms, grad_to_none=grads,
                      slow_ms=cfg.slow_ms, slow_samples=cfg.slow_samples)
        peak, extra = peak_memory(fn, device, grads)
        nbytes = case.bytes_fwd if pas == "fwd" else case.bytes_fwdbwd
        flops = case.flops_fwd if pas == "fwd" else case.flops_fwdbwd
        io = case.io_fwd if pas == "fwd" else case.io_fwdbwd
        gbps = nbytes / (t.median_ms * 1e-3) / 1e9
        out = {"time_ms": t.median_ms, "time_p20_ms": t.p20_ms, "time_p80_ms": t.p80_ms, "time_min_ms": t.min_ms,
               "samples": t.samples, "timer": t.timer, "peak_mem_bytes": peak, "peak_extra_bytes": extra,
               "mem_kind": "cuda_allocator" if device.type == "cuda" else "process_rss",
               "io_bytes": io, "peak_over_io": peak / io if io and device.type == "cuda" else math.nan,
               "bytes_moved": nbytes, "achieved_gbps": gbps, "bw_frac": gbps / copy_gbps, "flops": flops,
               "tflops": flops / (t.median_ms * 1e-3) / 1e12}
        for k, v in case.info.items():
            if k == "launch":
                out.update({f"triton_{a}": b for a, b in v.items()})
            else:
                out[k] = v
        out["wall_s"] = time.perf_counter() - t_start
        return out
    except Exception as e:  # every outcome is a row; the sweep goes on
        if is_out_of_memory(e):
            status = "oom"
        elif _is_unavailable_kernel(e):
            status = "unavailable"
        else:
            status = "error"
            log.debug("error in %s/%s", series.op, series.backend, exc_info=True)
        return {"status": status, "error": _short_error(e), "time_ms": math.nan,
                "wall_s": time.perf_counter() - t_start}
    finally:
        del case
        free_memory(device)
