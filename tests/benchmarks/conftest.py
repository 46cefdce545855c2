"""pytest-benchmark suites. `pytest` runs each once as a test (tests/conftest.py disables the timing);
compare commits with

    pytest tests/benchmarks --benchmark-enable --benchmark-json=before.json      # on the CPU sizes
    pytest tests/benchmarks -m gpu --benchmark-enable --benchmark-json=gpu.json  # the GPU sizes
    pytest-benchmark compare before.json after.json

CUDA work is synchronised inside the timed call, so the timings are the device's, not the launch's."""

from __future__ import annotations

import torch


def synced(fn, device):
    """fn, followed by a device synchronisation when the device is CUDA."""
    if torch.device(device).type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out
    return call
