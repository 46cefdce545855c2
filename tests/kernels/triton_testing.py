"""What the Triton kernel tests share: the device, the GPU marker, relative error, and the fixture that runs the
kernels in the CPU interpreter (TRITON_INTERPRET=1, per test) with NaN-poisoned outputs. A test module opts in
by importing `triton_mode` (an autouse fixture applies to the modules that import it)."""

from __future__ import annotations

import pytest
import torch

from ssmbench.kernels.common import triton_util as tu

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def triton_mode(monkeypatch):
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        tu.patch_interpreter_scan()
    monkeypatch.setattr(tu, "POISON", True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||; absolute when the reference is exactly zero. (dA at L = 1 is exactly zero, since the
    initial state is 0; the GPU backward used to return fp32 rounding noise there, issue 13, and the tests now
    require exact zeros: test_scan_lengths.py.)"""
    a, b = a.double(), b.double()
    nb = b.norm()
    return ((a - b).norm() / (nb if nb > 0 else 1.0)).item()
