"""Plumbing shared by the Triton kernels (selective scan, decode step, causal conv1d); also importable as
ssmbench.kernels.selective_scan.triton_util, its old home.

Three things live here:

* `load_kernels(path)`: imports a file of `@triton.jit` kernels *for the current mode*. Triton decides at
  decoration time (import) whether a kernel is compiled or run by the CPU interpreter (TRITON_INTERPRET=1,
  read when `triton.jit` runs, checked on triton 3.9). A kernel module imported once without the variable
  would stay compiled-only for the whole process, so the wrappers never import their kernels directly: they
  ask this loader, which keeps one copy of the module per mode. triton.language's own @jit helpers (tl.sigmoid,
  tl.cdiv, tl.sum's combine) are decorated once, when triton is first imported: to use the interpreter, set
  TRITON_INTERPRET=1 before anything imports triton (tests/conftest.py does, on machines without CUDA).
* `alloc(...)`: allocation of kernel outputs; with `POISON = True` (tests) every output starts as NaN, so an
  element the kernel forgot to write shows up in the comparison instead of hiding as stale memory.
* `patch_interpreter_scan()`: makes `tl.associative_scan` in the interpreter loop over the scan axis with
  whole-slice combine calls instead of one Python call per element. Same left-to-right fold, same combine
  function, same results; the tests are ~30x faster with it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import torch

POISON = False  # tests set this (monkeypatch) so outputs start as NaN

_modules: dict[tuple[str, bool], object] = {}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def load_kernels(path: str | Path):
    """Import the kernel file at `path`, decorated for the current mode (compiled or interpreted)."""
    path = str(path)
    key = (path, interpreting())
    mod = _modules.get(key)
    if mod is None:
        name = f"ssmbench_triton_{Path(path).stem}_{'interp' if key[1] else 'jit'}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # triton resolves globals through the module; keep it findable
        spec.loader.exec_module(mod)
        _modules[key] = mod
    return mod


def alloc(shape, dtype, device) -> torch.Tensor:
    """An output buffer every element of which the kernel must write (NaN-filled when POISON is on)."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def alloc_like(x: torch.Tensor, dtype=None) -> torch.Tensor:
    """Like alloc, shaped like x and in x's memory order when x is dense with a contiguous last dim (a [B, E, L]
    view of an [E, B, L] buffer gets its output in that order, so the next GEMM reads it without a copy), else
    contiguous. Kernels index the output with its own strides."""
    dtype = dtype or x.dtype
    if x.stride(-1) == 1:
        out = torch.empty_like(x, dtype=dtype)  # keeps x's strides when x is non-overlapping and dense
        if out.stride(-1) != 1:
            out = torch.empty(x.shape, dtype=dtype, device=x.device)
    else:
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
    if POISON:
        out.fill_(float("nan"))
    return out


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
    return 132  # the interpreter: pretend to be an H200 so the heuristics take the same branches


@functools.lru_cache(maxsize=None)
def _cuda_sms(index: int) -> int:  # cached: the query costs microseconds on every call of a kernel wrapper
    return torch.cuda.get_device_properties(index).multi_processor_count


_scan_patched = False


def patch_interpreter_scan() -> None:
    """Vectorise the interpreter's generic associative scan (see the module docstring). Idempotent."""
    global _scan_patched
    if _scan_patched:
        return
    import numpy as np
    from triton.runtime import interpreter as interp

    def generic_scan(self, input):
        axis = self.axis
        datas = [arg.handle.data for arg in input]
        outs = [np.empty_like(d) for d in datas]
        n = datas[0].shape[axis]

        def at(i):
            return (slice(None),) * axis + (i,)

        acc = [d[at(0)] for d in datas]
        for o, a in zip(outs, acc):
            o[at(0)] = a
        for i in range(1, n):
            prev = tuple(self.to_tensor(a, input[j].dtype) for j, a in enumerate(acc))
            cur = tuple(self.to_tensor(d[at(i)], input[j].dtype) for j, d in enumerate(datas))
            ret = self.combine_fn.fn(*prev, *cur)
            ret = ret if isinstance(ret, tuple) else (ret,)
            acc = [r.handle.data.reshape(np.shape(d[at(i)])) if hasattr(r, "handle") else r
                   for r, d in zip(ret, datas)]
            for o, a in zip(outs, acc):
                o[at(i)] = a
        return [self.to_tensor(o, input[j].dtype) for j, o in enumerate(outs)]

    interp.ScanOps.generic_scan = generic_scan
    _scan_patched = True
