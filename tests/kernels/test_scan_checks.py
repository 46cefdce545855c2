"""One argument check for every selective-scan backend and the decode step (kernels/selective_scan/checks.py):
each mistake is a ValueError naming the argument and both shapes, raised by the public dispatchers and by every
backend entry called directly, before any work; nothing is sliced or cast past a mistake. Cheap: no scan runs
except the few valid calls at the end."""

from __future__ import annotations

import re
import time

import pytest
import torch

from ssmbench.kernels.selective_scan import selective_scan, selective_state_update
from ssmbench.kernels.selective_scan.checks import check_scan_args, check_step_args
from ssmbench.kernels.selective_scan.reference import selective_scan_ref, selective_state_update_ref
from ssmbench.kernels.selective_scan.torch_scan import selective_scan_torch

from .triton_testing import triton_mode  # noqa: F401  (autouse: the interpreter for "triton" on the CPU)

BATCH, DIM, N, L = 2, 4, 3, 6


def scan_args(**over):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    args = dict(u=r(BATCH, DIM, L), delta=r(BATCH, DIM, L), A=-torch.rand(DIM, N, generator=g) - 0.1,
                B=r(BATCH, 2, N, L), C=r(BATCH, 2, N, L), D=r(DIM), z=r(BATCH, DIM, L), delta_bias=r(DIM))
    args.update(over)
    return args


def _triton(**kw):
    from ssmbench.kernels.selective_scan.triton_scan import selective_scan_triton
    return selective_scan_triton(**kw)


ENTRIES = {  # every way in: the dispatcher per backend, and each backend's own entry
    "dispatch:reference": lambda **kw: selective_scan(**kw, backend="reference"),
    "dispatch:torch": lambda **kw: selective_scan(**kw, backend="torch"),
    "dispatch:triton": lambda **kw: selective_scan(**kw, backend="triton"),
    "reference": lambda **kw: selective_scan_ref(**kw),
    "torch": lambda **kw: selective_scan_torch(**kw),
    "triton": _triton,
}

# (what is wrong, the arguments that differ from a valid call, the message's essential words)
BAD_SCANS = [
    ("B longer than u", dict(B=torch.randn(BATCH, 2, N, 70)),
     "B has L=70 time steps but u has L=6 (B: [2, 2, 3, 70], u: [2, 4, 6])"),
    ("C shorter than u", dict(C=torch.randn(BATCH, N, 5)),
     "C has L=5 time steps but u has L=6 (C: [2, 3, 5], u: [2, 4, 6])"),
    ("delta longer than u", dict(delta=torch.randn(BATCH, DIM, 9)),
     "delta has L=9 time steps but u has L=6 (delta: [2, 4, 9], u: [2, 4, 6])"),
    ("z of another batch", dict(z=torch.randn(3, DIM, L)), "z has batch=3 but u has batch=2 (z: [3, 4, 6], u: [2, 4, 6])"),
    ("delta of another dim", dict(delta=torch.randn(BATCH, 5, L)),
     "delta has dim=5 but u has dim=4 (delta: [2, 5, 6], u: [2, 4, 6])"),
    ("delta without batch", dict(delta=torch.randn(DIM, L)), "delta must be [batch, dim, L] like u but has 2 dimensions"),
    ("u without batch", dict(u=torch.randn(DIM, L)), "u must be [batch, dim, L] but has shape [4, 6]"),
    ("B 2 groups, C 4", dict(C=torch.randn(BATCH, 4, N, L)),
     "B has 2 group(s) but C has 4; time-varying B and C must have the same number of groups "
     "(B: [2, 2, 3, 6], C: [2, 4, 3, 6])"),
    ("B one group [batch, N, L], C 2", dict(B=torch.randn(BATCH, N, L)), "B has 1 group(s) but C has 2"),
    ("groups that do not divide dim", dict(B=torch.randn(BATCH, 3, N, L), C=torch.randn(BATCH, 3, N, L)),
     "B has 3 groups, which does not divide dim=4 (B: [2, 3, 3, 6], u: [2, 4, 6])"),
    ("zero groups", dict(B=torch.randn(BATCH, 0, N, L)), "B has 0 groups"),
    ("B with 5 dimensions", dict(B=torch.randn(BATCH, 1, 1, N, L)), "B must be [dim, N], [batch, N, L] or [batch, groups, N, L]"),
    ("B of another batch", dict(B=torch.randn(1, 2, N, L)), "B has batch=1 but u has batch=2"),
    ("B with another N", dict(B=torch.randn(BATCH, 2, 5, L)), "B has N=5 states but A has N=3 (B: [2, 2, 5, 6], A: [4, 3])"),
    ("fixed C with another dim", dict(C=torch.randn(5, N)), "C fixed over time must be [dim, N] = [4, 3] but has dim=5"),
    ("fixed B with another N", dict(B=torch.randn(DIM, 2)), "B has N=2 states but A has N=3 (B: [4, 2], A: [4, 3])"),
    ("complex A", dict(A=torch.complex(-torch.rand(DIM, N), torch.rand(DIM, N))), "A is complex (torch.complex64)"),
    ("A of another dim", dict(A=-torch.rand(5, N)), "A has dim=5 channels but u has dim=4 (A: [5, 3], u: [2, 4, 6])"),
    ("A as a vector", dict(A=-torch.rand(DIM)), "A must be [dim, N] but has shape [4]"),
    ("D of another length", dict(D=torch.randn(DIM + 1)), "D must be [dim] = [4] (one value per channel of u) but has shape [5]"),
    ("D as a column", dict(D=torch.randn(DIM, 1)), "D must be [dim] = [4]"),
    ("delta_bias of another length", dict(delta_bias=torch.randn(2)), "delta_bias must be [dim] = [4]"),
    ("integer u", dict(u=torch.ones(BATCH, DIM, L, dtype=torch.int64)), "u has dtype torch.int64"),
    ("bool z", dict(z=torch.ones(BATCH, DIM, L, dtype=torch.bool)), "z has dtype torch.bool"),
    ("B on another device", dict(B=torch.randn(BATCH, 2, N, L, device="meta")), "B is on meta but u is on cpu"),
]


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("what,over,message", BAD_SCANS, ids=[b[0] for b in BAD_SCANS])
def test_bad_scan_arguments(what, over, message, entry):
    with pytest.raises(ValueError, match=re.escape(message)):
        ENTRIES[entry](**scan_args(**over))


@pytest.mark.parametrize("entry", ["reference", "torch"])
def test_bad_initial_state(entry):
    fn = selective_scan_ref if entry == "reference" else selective_scan_torch
    with pytest.raises(ValueError, match=re.escape("initial_state must be [batch, dim, N] = [2, 4, 3] but has "
                                                   "shape [2, 4, 5]")):
        fn(**scan_args(), initial_state=torch.zeros(BATCH, DIM, 5))


def test_non_tensors_are_type_errors():
    with pytest.raises(TypeError, match="u must be a torch.Tensor, got list"):
        selective_scan(**scan_args(u=[[0.0]]), backend="reference")
    with pytest.raises(TypeError, match="delta is required"):
        selective_scan_ref(**scan_args(delta=None))
    with pytest.raises(TypeError, match="C must be a torch.Tensor, got ndarray"):
        selective_scan_torch(**scan_args(C=torch.zeros(BATCH, 2, N, L).numpy()))


def test_float64_only_where_the_arithmetic_is_float64():
    # reference and torch compute in float64 when given it; the Triton kernels compute in float32 and refuse it
    x = {k: v.double() for k, v in scan_args().items()}
    y_ref = selective_scan(**x, backend="reference")
    assert y_ref.dtype == torch.float64
    assert selective_scan(**x, backend="torch").dtype == torch.float64
    for fn in (lambda **kw: selective_scan(**kw, backend="triton"), _triton):
        with pytest.raises(ValueError, match="u is float64 but the triton backend computes in float32"):
            fn(**x)
        with pytest.raises(ValueError, match="A is float64 but the triton backend"):
            fn(**{**scan_args(), "A": x["A"]})


def test_valid_layouts_pass_on_every_backend():
    # every accepted B/C layout (fixed; one group as [batch, N, L] or [batch, 1, N, L]; 2 groups; a fixed one
    # beside a time-varying one of any group count) runs, with the same result everywhere
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    layouts = [(r(DIM, N), r(DIM, N)), (r(BATCH, N, L), r(BATCH, 1, N, L)), (r(BATCH, 2, N, L), r(BATCH, 2, N, L)),
               (r(BATCH, 4, N, L), r(DIM, N)), (r(DIM, N), r(BATCH, N, L))]
    for B, C in layouts:
        x = scan_args(B=B, C=C)
        y_ref = selective_scan_ref(**{k: v.double() for k, v in x.items()}, delta_softplus=True)
        for name, fn in ENTRIES.items():
            y = fn(**x, delta_softplus=True)
            assert ((y.double() - y_ref).norm() / y_ref.norm()).item() < 1e-5, (name, B.shape, C.shape)
    y = selective_scan(**scan_args(u=torch.zeros(BATCH, DIM, 0), delta=torch.zeros(BATCH, DIM, 0),
                                   z=torch.zeros(BATCH, DIM, 0), B=torch.zeros(BATCH, 2, N, 0),
                                   C=torch.zeros(BATCH, 2, N, 0)), backend="torch")
    assert y.shape == (BATCH, DIM, 0)  # an empty sequence is valid


def test_checks_read_only_metadata():
    # meta tensors have shapes, dtypes and a device but no data: a check that read values (.item(), a
    # comparison of elements, a host sync under CUDA-graph capture) would fail on them
    meta = {k: v.to("meta") for k, v in scan_args().items()}
    check_scan_args(**meta, backend="triton")
    check_step_args(**{k: v.to("meta") for k, v in step_args()[0].items()}, state=torch.empty(BATCH, DIM, N,
                                                                                               device="meta"))
    with pytest.raises(ValueError, match="B has L=7 time steps"):
        check_scan_args(**{**meta, "B": torch.empty(BATCH, 2, N, 7, device="meta")})
    x = scan_args()
    t0 = time.perf_counter()
    for _ in range(200):
        check_scan_args(**x, backend="triton")
    per_call = (time.perf_counter() - t0) / 200
    assert per_call < 1e-3, f"check_scan_args takes {per_call * 1e6:.0f} us a call"


# ---------------------------------------------------------------- the decode step

def step_args(**over):
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    args = dict(x=r(BATCH, DIM), dt=r(BATCH, DIM), A=-torch.rand(DIM, N, generator=g) - 0.1, B=r(BATCH, 2, N),
                C=r(BATCH, 2, N), D=r(DIM), z=r(BATCH, DIM), dt_bias=r(DIM))
    args.update(over)
    return args, r(BATCH, DIM, N)


def _step_triton(state, **kw):
    from ssmbench.kernels.selective_scan.triton_decode import selective_state_update_triton
    return selective_state_update_triton(state, **kw)


STEP_ENTRIES = {
    "dispatch:reference": lambda state, **kw: selective_state_update(state, **kw, backend="reference"),
    "dispatch:triton": lambda state, **kw: selective_state_update(state, **kw, backend="triton"),
    "reference": lambda state, **kw: selective_state_update_ref(state, **kw),
    "triton": _step_triton,
}

BAD_STEPS = [
    ("state of another N", dict(state=torch.zeros(BATCH, DIM, 5)),
     "state must be [batch, dim, N] = [2, 4, 3] but has shape [2, 4, 5] (x: [2, 4], A: [4, 3])"),
    ("x as a sequence", dict(x=torch.randn(BATCH, DIM, 1)), "x must be [batch, dim] (one token) but has shape [2, 4, 1]"),
    ("dt of another dim", dict(dt=torch.randn(BATCH, 5)), "dt has dim=5 but x has dim=4 (dt: [2, 5], x: [2, 4])"),
    ("z of another batch", dict(z=torch.randn(3, DIM)), "z has batch=3 but x has batch=2"),
    ("B 2 groups, C 4", dict(C=torch.randn(BATCH, 4, N)), "B has 2 group(s) but C has 4"),
    ("B one group, C 2", dict(B=torch.randn(BATCH, N)), "B has 1 group(s) but C has 2"),
    ("groups that do not divide dim", dict(B=torch.randn(BATCH, 3, N), C=torch.randn(BATCH, 3, N)),
     "B has 3 groups, which does not divide dim=4"),
    ("B with another N", dict(B=torch.randn(BATCH, 2, 5)), "B has N=5 states but A has N=3 (B: [2, 2, 5], A: [4, 3])"),
    ("B of a sequence", dict(B=torch.randn(BATCH, 2, N, 1)), "B must be [batch, N] or [batch, groups, N]"),
    ("C of another batch", dict(C=torch.randn(1, 2, N)), "C has batch=1 but x has batch=2"),
    ("complex A", dict(A=torch.complex(-torch.rand(DIM, N), torch.rand(DIM, N))), "A is complex"),
    ("A of another dim", dict(A=-torch.rand(5, N)), "A has dim=5 channels but x has dim=4"),
    ("D of another length", dict(D=torch.randn(DIM + 1)), "D must be [dim] = [4]"),
    ("dt_bias as a matrix", dict(dt_bias=torch.randn(1, DIM)), "dt_bias must be [dim] = [4]"),
]


@pytest.mark.parametrize("entry", list(STEP_ENTRIES))
@pytest.mark.parametrize("what,over,message", BAD_STEPS, ids=[b[0] for b in BAD_STEPS])
def test_bad_step_arguments(what, over, message, entry):
    args, state = step_args(**{k: v for k, v in over.items() if k != "state"})
    state = over.get("state", state)
    before = state.clone()
    with pytest.raises(ValueError, match=re.escape(message)):
        STEP_ENTRIES[entry](state, **args)
    assert torch.equal(state, before)  # refused before anything was written


def test_valid_step_layouts():
    for B_shape in ((BATCH, N), (BATCH, 1, N), (BATCH, 4, N)):
        args, state = step_args(B=torch.randn(B_shape), C=torch.randn(B_shape))
        s_ref = state.double()
        yr, _ = selective_state_update_ref(s_ref, **{k: v.double() for k, v in args.items()})
        for name, fn in STEP_ENTRIES.items():
            s = state.clone()
            y, _ = fn(s, **args)
            assert ((y.double() - yr).norm() / yr.norm()).item() < 1e-5, (name, B_shape)
