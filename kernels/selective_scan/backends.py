"""Backend registry and dispatch for the selective scan."""

from __future__ import annotations

import importlib
import os

import torch

from .checks import check_scan_args

BACKENDS = ("reference", "torch", "triton", "mamba_ssm")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why."""


def _triton_reason(device: torch.device) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not importable ({e})"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return (f"inputs are on {device.type}; the Triton kernels need a CUDA device (or TRITON_INTERPRET=1, set before "
            "triton is first imported, to run them in the CPU interpreter)")


def _mamba_ssm_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"inputs are on {device.type}; mamba_ssm's kernel needs a CUDA device"
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        return f"mamba_ssm is not importable ({type(e).__name__}: {e})"
    return None


def unavailable_reason(backend: str, device: torch.device | str) -> str | None:
    """None if `backend` can run on `device`, else a sentence saying why not."""
    device = torch.device(device)
    if backend in ("reference", "torch"):
        return None
    if backend == "triton":
        return _triton_reason(device)
    if backend == "mamba_ssm":
        return _mamba_ssm_reason(device)
    raise ValueError(f"unknown selective scan backend {backend!r}; choose one of {('auto',) + BACKENDS}")


def resolve_kernel_backend(op: str, backend: str, device: torch.device | str) -> str:
    """For the ops that have a reference and a Triton kernel only (causal conv1d, the decode step): "auto" is
    Triton on CUDA and the reference elsewhere; an explicit "triton" that cannot run raises with the reason."""
    device = torch.device(device)
    choices = ("reference", "triton")
    if backend == "auto":
        return "triton" if device.type == "cuda" and unavailable_reason("triton", device) is None else "reference"
    if backend not in choices:
        raise ValueError(f"unknown {op} backend {backend!r}; choose one of {('auto',) + choices}")
    if backend == "triton":
        reason = unavailable_reason("triton", device)
        if reason is not None:
            raise BackendUnavailable(f"{op} backend 'triton' cannot run: {reason}")
    return backend


def available_backends(device: torch.device | str) -> list[str]:
    return [b for b in BACKENDS if unavailable_reason(b, device) is None]


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Turn "auto" into a concrete backend for `device`; check that an explicit one can run."""
    device = torch.device(device)
    if backend == "auto":
        # On CUDA the fused kernels win; on the CPU the chunked torch scan does (the interpreter is for tests).
        order = ("triton", "mamba_ssm", "torch") if device.type == "cuda" else ("torch",)
        for b in order:
            if unavailable_reason(b, device) is None:
                return b
        return "torch"
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise BackendUnavailable(f"selective scan backend {backend!r} cannot run: {reason}")
    return backend


def _impl(backend: str):
    """The backend's implementation, minus the argument check that `selective_scan` has already made."""
    if backend == "reference":
        from .reference import scan_ref_unchecked
        return scan_ref_unchecked
    if backend == "torch":
        from .torch_scan import scan_torch_unchecked
        return scan_torch_unchecked
    if backend == "triton":
        from .triton_scan import scan_triton_unchecked
        return scan_triton_unchecked
    if backend == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return selective_scan_fn
    raise ValueError(f"unknown selective scan backend {backend!r}; choose one of {('auto',) + BACKENDS}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u must be a torch.Tensor, got {type(u).__name__}")
    backend = resolve_backend(backend, u.device)
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, backend=backend)  # once, here, for every backend
    return _impl(backend)(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                          return_last_state=return_last_state)
