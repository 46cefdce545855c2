"""Decode step (selective_state_update): Triton kernel against the reference, and a run of decode steps against
the full selective scan. CPU: Triton interpreter (TRITON_INTERPRET=1 per test); GPU: `pytest -m gpu`."""

from __future__ import annotations

import pytest
import torch

from ssmbench.kernels.selective_scan import (
    BackendUnavailable,
    selective_scan_ref,
    selective_state_update,
    selective_state_update_ref,
)

from .triton_testing import CUDA, DEV, gpu, rel_err, triton_mode  # noqa: F401  (triton_mode: autouse)


def inputs(batch, dim, N, groups, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    bc = (batch, N) if groups is None else (batch, groups, N)
    d = dict(x=r(batch, dim).to(dtype), dt=r(batch, dim).to(dtype), A=-torch.rand(dim, N, generator=g) - 0.1,
             B=r(*bc).to(dtype), C=r(*bc).to(dtype), D=r(dim), z=r(batch, dim).to(dtype), dt_bias=r(dim) * 0.3)
    return {k: v.to(DEV) for k, v in d.items()}, r(batch, dim, N).to(DEV)


@pytest.mark.parametrize("groups", [None, 1, 2])
@pytest.mark.parametrize("dim", [6, 70])
def test_step_matches_reference(groups, dim):
    inp, state = inputs(2, dim, 5, groups, seed=dim)
    s_fast, s_ref = state.clone(), state.double()
    y, s_out = selective_state_update(s_fast, **inp, dt_softplus=True, backend="triton")
    yr, _ = selective_state_update(s_ref, **{k: v.double() for k, v in inp.items()}, dt_softplus=True,
                                   backend="reference")
    assert s_out.data_ptr() == s_fast.data_ptr()  # in place
    assert rel_err(y, yr) < 1e-5 and rel_err(s_fast, s_ref) < 1e-5


def test_optional_inputs_and_bf16_state():
    inp, state = inputs(3, 8, 16, None, seed=1)
    for k in ("D", "z", "dt_bias"):
        inp[k] = None
    s_fast, s_ref = state.bfloat16(), state.bfloat16().double()
    y, _ = selective_state_update(s_fast, **inp, backend="triton")
    yr, _ = selective_state_update_ref(s_ref, **{k: (v.double() if v is not None else None)
                                                for k, v in inp.items()})
    assert s_fast.dtype == torch.bfloat16
    assert rel_err(y, yr) < 1e-5 and rel_err(s_fast, s_ref) < 1e-2


def test_steps_equal_scan():
    batch, dim, N, L = 2, 4, 8, 12
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g).to(DEV)  # noqa: E731
    u, delta, z = r(batch, dim, L), r(batch, dim, L), r(batch, dim, L)
    A, B, C, D, bias = -torch.rand(dim, N, generator=g).to(DEV), r(batch, 2, N, L), r(batch, 2, N, L), r(dim), r(dim)
    y_scan, last = selective_scan_ref(u.double(), delta.double(), A.double(), B.double(), C.double(), D.double(),
                                      z.double(), bias.double(), delta_softplus=True, return_last_state=True)
    state = torch.zeros(batch, dim, N, device=DEV)
    ys = [selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D, z[..., t], bias,
                                 dt_softplus=True, backend="triton")[0] for t in range(L)]
    assert rel_err(torch.stack(ys, -1), y_scan) < 1e-5 and rel_err(state, last) < 1e-5


def test_backend_errors(monkeypatch):
    inp, state = inputs(1, 2, 4, None, seed=4)
    with pytest.raises(ValueError, match="unknown"):
        selective_state_update(state, **inp, backend="cuda")
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(BackendUnavailable, match="CUDA"):
            selective_state_update(state, **inp, backend="triton")
        y, _ = selective_state_update(state, **inp, backend="auto")  # the reference on the CPU
        assert y.shape == (1, 2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("groups", [None, 8])
def test_gpu_step(groups):
    inp, state = inputs(64, 1536, 16, groups, seed=5, dtype=torch.bfloat16)
    s_fast, s_ref = state.clone(), state.double()
    y, _ = selective_state_update(s_fast, **inp, dt_softplus=True, backend="triton")
    yr, _ = selective_state_update(s_ref, **{k: v.double() for k, v in inp.items()}, dt_softplus=True,
                                   backend="reference")
    assert rel_err(y, yr) < 1e-2 and rel_err(s_fast, s_ref) < 1e-5
