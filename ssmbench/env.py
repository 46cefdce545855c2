"""The environment every result row carries: device, library versions, commit; and the device a config names."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

from .kernels.common.options import describe as describe_kernel_options


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """The checkout's commit (+dirty), or SSMBENCH_COMMIT where the code runs from a copy without .git (a lent
    GPU machine gets the working tree alone: scripts/gpu_profile_all.sh passes the commit along this way)."""
    if os.environ.get("SSMBENCH_COMMIT"):
        return os.environ["SSMBENCH_COMMIT"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        if commit != "unknown" and dirty.stdout.strip():
            commit += "+dirty"
        return commit
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_device(name: str, error: type[Exception] = ValueError) -> torch.device:
    """The device a config's `device` key names: auto (CUDA when there is one, else the CPU), cpu, cuda, cuda:N.
    A name that is not a device, or CUDA where there is none, raises `error` (each app's config error)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise error(f"device={name!r} is not a device name (auto, cpu, cuda, cuda:N)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device | str) -> dict[str, str]:
    device = torch.device(device)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "commit": git_commit(),
        # the step's implementation choices (environment variables; kernels/common/options.py): a timing is
        # never read without them
        "kernel_options": describe_kernel_options(),
        # how the call that wrote the row shared its GPU with other runs (scripts/gpu_parallel.sh sets it: mps,
        # time-sliced, threads, ensemble); empty when the process was started otherwise. Throughput and memory
        # measured on a shared GPU are per-run rates, not a GPU's alone.
        "gpu_sharing": os.environ.get("SSMBENCH_GPU_SHARING", ""),
    }
