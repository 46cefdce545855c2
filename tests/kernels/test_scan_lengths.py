"""The fused Triton scan at every short length and around the block/checkpoint/segment boundaries, against the
float64 reference: output, last state and every gradient (du, d(delta), dA, dB, dC, dD, dz, d(delta_bias)) by
relative error, in every B/C layout, with and without z, D, delta_bias and return_last_state. Outputs are
NaN-poisoned (triton_util.POISON, via the `triton_mode` fixture), so an element no kernel writes fails.

Issue 13: at L = 1 the reference dA is exactly 0 (h_{-1} = 0), and the GPU backward returned fp32 rounding
noise instead (a relative error of ~1e22 against any epsilon), so at L = 1 dA must be exactly zero.

CPU: the interpreter (TRITON_INTERPRET=1), small sizes, two option sets per (length, layout) that between them
turn every optional input on and off; the second runs with 32-step checkpoints and 16-step forward blocks
(the GPU's chunk), and forces the long-sequence path, so 31/32/33 and 63/64/65 sit on chunk and segment
boundaries. GPU (`pytest -m gpu`): every L in 1..70, fp32 and bf16, the default launch configuration.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ssmbench.kernels.selective_scan.reference import selective_scan_ref

from .test_triton_scan import make_inputs
from .triton_testing import gpu, rel_err, triton_mode  # noqa: F401  (triton_mode: autouse)

LENGTHS = list(range(1, 10)) + [31, 32, 33, 63, 64, 65]
LAYOUTS = {"fixed": dict(bc="fixed"), "var": dict(bc="var"), "groups": dict(bc="groups", groups=2)}
# (batch, dim) on the CPU: 4 programs each (the interpreter's time grows with them); the groups layout has 2
# channels per group, so channels of a group add their dB/dC into the same elements
CPU_SIZES = {"fixed": (2, 2), "var": (2, 2), "groups": (1, 4)}
OPTIONAL = ("z", "D", "bias", "last")


def option_sets(L: int, layout: str) -> list[dict]:
    """Two complementary sets of optional inputs (each one on in exactly one of the two) and delta_softplus,
    rotating with L and the layout so that over the sweep every combination of the five comes up."""
    k = (L * 3 + list(LAYOUTS).index(layout)) % 16
    first = dict({name: bool(k >> i & 1) for i, name in enumerate(OPTIONAL)}, softplus=bool(L & 1))
    return [first, {n: not v for n, v in first.items()}]


def run_case(L: int, layout: str, opts: dict, *, batch=2, dim=4, N=3, dtype=torch.float32, tol=2e-5,
             config=None, long_sequence=None, seed=0, no_grad=True) -> dict:
    """One scan against the reference, with autograd and (no_grad) without; returns what LAST_LAUNCH says
    the backward launched."""
    from ssmbench.kernels.selective_scan.triton_scan import LAST_LAUNCH, selective_scan_triton

    inp = make_inputs(batch, dim, L, N, dtype=dtype, z=opts["z"], D=opts["D"], bias=opts["bias"], seed=seed,
                      softplus=opts["softplus"], **LAYOUTS[layout])
    last, softplus = opts["last"], opts["softplus"]
    present = [k for k, v in inp.items() if v is not None]
    fast = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in inp.items()}
    ref = {k: (v.double().clone().requires_grad_() if v is not None else None) for k, v in inp.items()}
    out = selective_scan_triton(**fast, delta_softplus=softplus, return_last_state=last,
                                long_sequence=long_sequence, config=config)
    out_ref = selective_scan_ref(**ref, delta_softplus=softplus, return_last_state=last)
    (y, h), (yr, hr) = (out, out_ref) if last else ((out, None), (out_ref, None))
    assert y.dtype == dtype and y.shape == (batch, dim, L)
    errs = {"y": rel_err(y, yr)}
    g = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(y.shape, generator=g).to(y)
    loss, loss_ref = (y * gy).float().sum(), (yr * gy.double()).sum()
    if last:
        assert h.dtype == torch.float32 and h.shape == (batch, dim, N)
        errs["last_state"] = rel_err(h, hr)
        gh = torch.randn(h.shape, generator=g).to(h)
        loss, loss_ref = loss + (h * gh).sum(), loss_ref + (hr * gh.double()).sum()
    loss.backward()
    launch = dict(LAST_LAUNCH)
    loss_ref.backward()
    for k in present:
        grad = fast[k].grad
        assert grad is not None and grad.dtype == inp[k].dtype and grad.shape == inp[k].shape, k
        errs["d" + k] = rel_err(grad, ref[k].grad)
    if L == 1:  # h_{-1} = 0: the reference's dA is exactly zero, and so must the kernel's be (issue 13)
        assert torch.count_nonzero(ref["A"].grad) == 0
        assert torch.count_nonzero(fast["A"].grad) == 0, f"dA at L = 1 is not 0: {fast['A'].grad}"
    if no_grad:  # inference (no autograd node, no checkpoints): the same output and last state
        with torch.no_grad():
            out = selective_scan_triton(**inp, delta_softplus=softplus, return_last_state=last,
                                        long_sequence=long_sequence, config=config)
        y2, h2 = out if last else (out, None)
        errs["y (no grad)"] = rel_err(y2, yr)
        if last:
            errs["last_state (no grad)"] = rel_err(h2, hr)
    bad = {k: v for k, v in errs.items() if not v <= tol}  # `not <=` also catches NaN
    assert not bad, f"L={L} {layout} {opts}: relative errors over {tol}: {bad} (all: {errs}; launch {launch})"
    return launch


def _chunk32():
    from ssmbench.kernels.selective_scan.triton_scan import ScanConfig
    return ScanConfig(block_l_fwd=16, chunk=32, min_seg_len=32)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("L", LENGTHS)
def test_short_and_boundary_lengths(L, layout):
    first, second = option_sets(L, layout)
    batch, dim = CPU_SIZES[layout]
    # the interpreter's default launch (64-step blocks and checkpoints), with and without autograd
    run_case(L, layout, first, batch=batch, dim=dim, seed=L)
    launch = run_case(L, layout, second, batch=batch, dim=dim, seed=L + 100, config=_chunk32(), long_sequence=True,
                      no_grad=False)
    assert (launch["bwd_segments"] > 1) == (L > 32)  # two or three 32-step segments past one chunk


def test_option_sets_cover_every_combination():
    seen = set()
    for L, layout in itertools.product(LENGTHS, LAYOUTS):
        sets = option_sets(L, layout)
        for name in OPTIONAL + ("softplus",):
            assert sets[0][name] != sets[1][name]
        seen.update(tuple(s[n] for n in OPTIONAL + ("softplus",)) for s in sets)
    assert len(seen) == 32


# ---------------------------------------------------------------- GPU (pytest -m gpu)

@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gpu_every_length_to_70(layout, dtype, tol):
    # The default configuration (32-step checkpoints, so 31/32/33 and 63/64/65 cross them; on a GPU the
    # backward's register flip runs where the compiled layout fits), at a width with several groups.
    # Every case runs and every failure is reported, so one GPU call shows the whole pattern (which lengths,
    # which outputs), not the first case that failed; `pytest -s` prints each as it happens.
    failures = []
    for L in range(1, 71):
        for i, opts in enumerate(option_sets(L, layout)):
            try:
                run_case(L, layout, opts, batch=2, dim=64, N=16, dtype=dtype, tol=tol, seed=1000 * i + L)
            except AssertionError as e:
                failures.append(str(e).split(" (all:")[0])
                print(f"FAILED {layout} {dtype}: {e}", flush=True)  # seen at once with -s, even if the call is cut
    assert not failures, f"{len(failures)} of 140 cases failed:\n" + "\n".join(failures)
