"""One backend table per kernel op (kernels/<op>/table.py, kernels/common/dispatch.py): a scan backend added as
one table row, and nowhere else, is seen by the dispatcher, the S6 layer and the profiler; an unknown name is an
error that lists the known ones."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ssmbench.kernels import selective_scan as ss
from ssmbench.kernels.causal_conv1d import CONV_TABLE, causal_conv1d_fn
from ssmbench.kernels.common.dispatch import Backend, BackendUnavailable
from ssmbench.kernels.selective_scan import SCAN_TABLE, selective_scan, selective_state_update
from ssmbench.kernels.selective_scan.example_inputs import paper_scan_inputs
from ssmbench.kernels.selective_scan.reference import scan_ref_unchecked
from ssmbench.models.layers.s6 import S6Layer, decode_backend
from ssmbench.perf import kernels as prof

CALLS: list[tuple] = []


def toy_scan(u, *args, **kwargs):
    """The toy backend: the reference scan, counting its calls."""
    CALLS.append(tuple(u.shape))
    return scan_ref_unchecked(u, *args, **kwargs)


def _nowhere(device):
    return f"toy_gpu needs a device of type 'nowhere', not {device.type}"


@pytest.fixture
def toy(monkeypatch):
    """Two rows added to the scan table, and only there (monkeypatch restores the table afterwards): "toy", the
    first choice of "auto" everywhere, and "toy_gpu", which cannot run."""
    CALLS.clear()
    monkeypatch.setitem(SCAN_TABLE.rows, "toy", Backend(f"{__name__}:toy_scan", auto={"*": -1}, fp32_only=True,
                                                        step="reference", profile_rank=15))
    monkeypatch.setitem(SCAN_TABLE.rows, "toy_gpu", Backend(f"{__name__}:toy_scan", _nowhere, auto={"*": -2}))
    return "toy"


def _inputs(dtype=torch.float32):
    return paper_scan_inputs(2, 6, 9, 4, dtype, True, generator=torch.Generator().manual_seed(0))


def test_dispatcher_sees_a_table_row(toy):
    x = _inputs()
    y = selective_scan(**x, delta_softplus=True, backend="toy")
    assert CALLS == [(2, 6, 9)]
    torch.testing.assert_close(y, selective_scan(**x, delta_softplus=True, backend="reference"), rtol=0, atol=0)
    assert "toy" in ss.BACKENDS and "toy" in ss.available_backends("cpu")
    assert "toy_gpu" in ss.BACKENDS and "toy_gpu" not in ss.available_backends("cpu")
    # "auto" skips the row that cannot run here (its reason is kept) and takes the next best
    assert ss.resolve_backend("auto", "cpu") == "toy"
    with pytest.raises(BackendUnavailable, match="selective scan backend 'toy_gpu' cannot run: toy_gpu needs"):
        selective_scan(**x, backend="toy_gpu")
    # fp32_only: the argument checks refuse float64 for it, as for the Triton kernels
    with pytest.raises(ValueError, match="u is float64 but the toy backend computes in float32"):
        selective_scan(**_inputs(torch.float64), backend="toy")


def test_s6_layer_sees_a_table_row(toy):
    torch.manual_seed(0)
    layer = S6Layer(6, d_state=4, scan_backend="toy")
    ref = S6Layer(6, d_state=4, scan_backend="reference")
    ref.load_state_dict(layer.state_dict())
    x, z = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    with torch.no_grad():
        y = layer(x, z=z)
        assert CALLS == [(2, 6, 5)]
        torch.testing.assert_close(y, ref(x, z=z))
        # its row's step backend drives the decode step
        assert decode_backend("toy") == "reference"
        cache = layer.allocate_cache(2, 5)
        ys = [layer.step(x[:, t], cache, z_t=z[:, t]) for t in range(5)]
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-5, atol=1e-6)


def test_profiler_sees_a_table_row(toy, tmp_path):
    assert "toy" in prof.OPS["selective_scan"].backends and "toy" in prof._default_backends()["selective_scan"]
    order = prof.priority()
    assert order.index(("selective_scan", "triton")) < order.index(("selective_scan", "toy")) < \
        order.index(("selective_scan", "mamba_ssm"))  # profile_rank=15: between 10 and 20
    assert prof.OPS["selective_scan"].unavailable("toy_gpu", None, torch.device("cpu")).startswith("toy_gpu needs")
    cfg = prof.ProfileConfig(results_root=str(tmp_path), study="k", device="cpu", lengths=[8], passes=["fwd"],
                             shapes=[prof.ShapeConfig(batch=1, dim=8, d_state=4)], dtypes=["fp32"],
                             backends={"selective_scan": ["toy", "toy_gpu"]}, warmup_ms=0.5, rep_ms=2,
                             copy_bytes=1 << 20, report=False)
    assert [(s.op, s.backend) for s in prof.series_of(cfg)] == [("selective_scan", "toy"),
                                                                 ("selective_scan", "toy_gpu")]
    df = pd.DataFrame(prof.run_profile(cfg)).set_index("impl")
    assert df.loc["selective_scan:toy", "status"] == "ok" and CALLS
    assert df.loc["selective_scan:toy_gpu", "status"] == "unavailable"


def test_unknown_backend_names_the_known_ones(toy):
    known = "('auto', 'reference', 'torch', 'triton', 'mamba_ssm', 'toy', 'toy_gpu')"
    with pytest.raises(ValueError) as info:
        selective_scan(**_inputs(), backend="nope")
    assert str(info.value) == f"unknown selective scan backend 'nope'; choose one of {known}"
    with pytest.raises(ValueError) as info:
        S6Layer(6, scan_backend="nope")
    assert str(info.value) == f"model.layer.scan_backend='nope' is not one of {known}"
    with pytest.raises(ValueError, match=r"unknown causal conv1d backend 'nope'; choose one of \('auto', "
                                         r"'reference', 'triton'\)"):
        causal_conv1d_fn(torch.randn(1, 2, 5), torch.randn(2, 4), backend="nope")
    with pytest.raises(ValueError, match=r"unknown decode backend 'nope'; choose one of \('auto', 'reference', "
                                         r"'triton'\)"):
        selective_state_update(torch.zeros(1, 2, 4), *[torch.randn(1, 2)] * 2, -torch.ones(2, 4),
                               *[torch.randn(1, 4)] * 2, backend="nope")
    with pytest.raises(prof.ProfileConfigError, match="unknown backend 'nope'"):
        prof.validate_profile(prof.ProfileConfig(backends={"selective_scan": ["nope"]}))


def test_tables_resolve_auto_by_device_type():
    # the built-in rows: the order "auto" tries, per device type
    assert SCAN_TABLE.auto_order("cuda") == ["triton", "mamba_ssm", "torch"]
    assert SCAN_TABLE.auto_order("cpu") == SCAN_TABLE.auto_order("meta") == ["torch"]
    assert CONV_TABLE.auto_order("cuda") == ["triton", "reference"] and CONV_TABLE.auto_order("cpu") == ["reference"]
    assert CONV_TABLE.profiled() == {"triton": "triton", "torch": "reference"}  # the profiler's names
