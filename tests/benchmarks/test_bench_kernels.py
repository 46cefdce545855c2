"""Kernel benchmarks: the profiler's ops (ssmbench.perf.kernels.OPS) at fixed shapes (CPU sizes run everywhere;
the GPU sizes, the Mamba paper's Figure 8 setting, batch 1, dim 1024, N 16, bf16, are marked gpu); the kernels'
speed targets, the profiler's preset `profile=targets`, composed and run at toy sizes on the CPU (the Triton scan
in the interpreter), each scan row carrying the official kernel's time and its source; and the launch-parameter
sweeps of scripts/scan_sweeps.py, which time with the profiler's clocks and write through its row store."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from ssmbench.perf import kernels as prof
from ssmbench.perf.cli import compose_profile
from ssmbench.perf.official import OfficialTimes
from ssmbench.perf.report import write_profile_report
from ssmbench.perf.timing import clear_grads
from ssmbench.results import load_all

from .conftest import synced

REPO = Path(__file__).resolve().parents[2]


def make_case(op, backend, batch, dim, L, N, dtype, device, head_dim=64):
    shape = prof.Shape(batch, dim, L, N, dtype, head_dim, 4, True)
    dev = torch.device(device)
    return prof.OPS[op].build(backend, shape, dev, torch.Generator(device=dev).manual_seed(0))


def run(benchmark, case, pas, device):
    if pas == "fwd":
        fn = case.fwd
    else:
        def fn():
            clear_grads(case.grads)
            case.fwdbwd()
    fn()  # compile / warm up outside the measurement
    benchmark(synced(fn, device))


CPU_CASES = [
    ("selective_scan", "torch", 2, 32, 256, 8),
    ("selective_scan", "reference", 2, 32, 64, 8),
    ("causal_conv1d", "torch", 2, 64, 1024, 0),
    ("s4_fft_conv", "torch_fft", 2, 64, 1024, 0),
    ("attention", "sdpa_math", 2, 64, 256, 0),
]


@pytest.mark.parametrize("pas", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("op, backend, batch, dim, L, N", CPU_CASES, ids=[f"{c[0]}-{c[1]}" for c in CPU_CASES])
def test_cpu(benchmark, op, backend, batch, dim, L, N, pas):
    run(benchmark, make_case(op, backend, batch, dim, L, max(N, 1), torch.float32, "cpu", head_dim=16), pas, "cpu")


def test_cpu_decode_step(benchmark):
    from ssmbench.kernels.selective_scan import selective_state_update
    B, D, N = 8, 256, 16
    g = torch.Generator().manual_seed(0)
    state = torch.randn(B, D, N, generator=g)
    x, dt, z = (torch.randn(B, D, generator=g) for _ in range(3))
    A = -torch.rand(D, N, generator=g)
    Bm, Cm = (torch.randn(B, N, generator=g) for _ in range(2))
    benchmark(lambda: selective_state_update(state, x, dt, A, Bm, Cm, torch.ones(D), z, torch.zeros(D), True,
                                             backend="reference"))


GPU_CASES = [
    ("selective_scan", "triton", 1, 1024, 4096),
    ("selective_scan", "triton", 1, 1024, 65536),
    ("selective_scan", "triton", 8, 1536, 4096),
    ("selective_scan", "torch", 1, 1024, 4096),
    ("causal_conv1d", "triton", 1, 2048, 65536),
    ("causal_conv1d", "torch", 1, 2048, 65536),
    ("s4_fft_conv", "torch_fft", 1, 1024, 65536),
    ("attention", "sdpa_flash", 1, 1024, 4096),
    ("attention", "sdpa_cudnn", 1, 1024, 4096),
]


@pytest.mark.gpu
@pytest.mark.parametrize("pas", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("op, backend, batch, dim, L", GPU_CASES,
                         ids=[f"{c[0]}-{c[1]}-B{c[2]}-D{c[3]}-L{c[4]}" for c in GPU_CASES])
def test_gpu(benchmark, op, backend, batch, dim, L, pas):
    reason = prof.OPS[op].unavailable(backend, prof.Shape(batch, dim, L, 16, torch.bfloat16), torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    run(benchmark, make_case(op, backend, batch, dim, L, 16, torch.bfloat16, "cuda"), pas, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("batch", [1, 128])
def test_gpu_decode_step(benchmark, backend, batch):
    from ssmbench.kernels.selective_scan import selective_state_update
    D, N, dev = 2048, 16, "cuda"
    state = torch.randn(batch, D, N, device=dev)
    x, dt, z = (torch.randn(batch, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    A = -torch.rand(D, N, device=dev)
    Bm, Cm = (torch.randn(batch, N, device=dev, dtype=torch.bfloat16) for _ in range(2))
    Dv, bias = torch.ones(D, device=dev), torch.zeros(D, device=dev)
    fn = synced(lambda: selective_state_update(state, x, dt, A, Bm, Cm, Dv, z, bias, True, backend=backend), dev)
    fn()
    benchmark(fn)


# -- the kernels' speed targets: ssmbench-profile profile=targets ------------------------------------------------

TARGET_SHAPES = {"paper": (1, 1024), "b8": (8, 1536), "narrow": (1, 128), "narrow_plain": (1, 128),
                 "table1": (64, 128), "induction": (8, 128)}


def _points(cfg, backend="triton"):
    """(shape, dtype, L, pass) of every point of `backend`'s scan series in the profile."""
    for s in cfg.shapes:
        backends = (s.backends if s.backends is not None else cfg.backends).get("selective_scan", [])
        if backend not in backends:
            continue
        for dt in s.dtypes or cfg.dtypes:
            for L in s.lengths or cfg.lengths:
                for pas in s.passes or cfg.passes:
                    yield s, dt, L, pas


def test_targets_preset_has_every_target_and_the_committed_csv_its_official_times():
    cfg = compose_profile(["profile=targets"])
    prof.validate_profile(cfg)
    shapes = {s.name: s for s in cfg.shapes}
    assert {n: (s.batch, s.dim) for n, s in shapes.items()} == TARGET_SHAPES
    assert all(s.d_state == 16 for s in cfg.shapes) and cfg.dtypes == ["bf16"] and cfg.gated
    assert (shapes["paper"].lengths or cfg.lengths) == [2 ** k for k in range(9, 20)]
    assert shapes["b8"].lengths == [4096] and shapes["table1"].lengths == [4128]
    assert shapes["induction"].lengths == [256] and shapes["narrow"].lengths == [2 ** 20]
    assert shapes["narrow"].long_sequence is True and shapes["narrow_plain"].long_sequence is False
    assert "sdpa_flash" in shapes["paper"].backends["attention"]
    for name in ("paper", "b8", "narrow", "table1", "induction"):  # the official kernel, measured where it runs
        assert shapes[name].backends["selective_scan"][:2] == ["triton", "mamba_ssm"], name
    # where mamba_ssm does not run, the committed CSV has the official time of every point (the narrow shape:
    # forward only, as the CSV has it)
    official = OfficialTimes(None)
    assert not official.error
    missing = []
    for s, dt, L, pas in _points(cfg):
        row = {"batch": s.batch, "dim": s.dim, "d_state": s.d_state, "dtype": dt, "gated": cfg.gated, "seq_len": L,
               "pass": pas, "status": "ok", "time_ms": 1.0}
        c = official.columns(row)
        if c["official_source"] != "reference_csv":
            missing.append((s.name, dt, L, pas))
        else:
            assert c["official_ms"] > 0 and c["vs_official"] == c["official_ms"]
    assert missing == [("narrow", "bf16", 2 ** 20, "fwdbwd"), ("narrow_plain", "bf16", 2 ** 20, "fwdbwd")]


TINY = {1: 1, 8: 2, 64: 3, 128: 1, 1024: 2, 1536: 3}  # batch and dim of the targets -> toy sizes, kept distinct


def _tiny_targets(tmp_path):
    """The targets preset at toy sizes on the CPU: every shape, with its passes, dtypes, backends and forced path
    kept; batch and dim shrunk, N 4, one length each (128 where the long-sequence path is forced, so that it
    splits: the interpreter's config has 64-step blocks), and an official CSV with a time for each point."""
    cfg = compose_profile(["profile=targets", f"results_root={tmp_path}", "device=cpu", "warmup_ms=0.5", "rep_ms=1",
                           "slow_samples=1", "copy_bytes=1048576", "report=false", "budget_s=null"])
    for s in cfg.shapes:
        s.batch, s.dim, s.d_state = TINY[s.batch], TINY[s.dim], 4
        s.lengths = [128 if s.long_sequence is not None else 64]
    cfg.lengths = [64]
    ref = tmp_path / "official.csv"
    times = {}
    with open(ref, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["op", "B", "D", "L", "N", "gated_z", "fwd_ms", "fwdbwd_ms"])
        for s, dt, L, _ in _points(cfg):
            if (s.batch, s.dim, dt, L, "fwd") in times:
                continue
            i = len(times)
            fwd, bwd = 100.0 + i, (200.0 + i if s.long_sequence is None else "")  # narrow: forward only
            op = "mamba_ssm_selective_scan" + ("_fp32" if dt == "fp32" else "")
            w.writerow([op, s.batch, s.dim, L, s.d_state, True, fwd, bwd])
            times[(s.batch, s.dim, dt, L, "fwd")] = fwd
            if bwd != "":
                times[(s.batch, s.dim, dt, L, "fwdbwd")] = bwd
    cfg.official_csv = str(ref)
    return cfg, times


@pytest.mark.slow
def test_targets_preset_runs_at_toy_sizes_on_the_cpu_with_official_times(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # tests/conftest.py set it before triton was imported
    cfg, times = _tiny_targets(tmp_path)
    rows = prof.run_profile(cfg)
    df = pd.DataFrame(rows)
    stored = pd.DataFrame(load_all(tmp_path / "kernel_targets"))
    assert len(stored) == len(df) and set(stored["run_id"]) == set(df["run_id"])
    fused = df[df["impl"] == "selective_scan:triton"]
    # every point of the fused scan ran (the Triton interpreter), with its shape's name
    assert len(fused) == len(list(_points(cfg))) and (fused["status"] == "ok").all(), fused["error"].tolist()
    assert set(fused["shape_name"]) == set(TARGET_SHAPES)
    # the official kernel cannot run here: its rows say why, and the scan rows take the CSV's times
    assert (df[df["backend"] == "mamba_ssm"]["status"] == "unavailable").all()
    scan = df[(df["op"] == "selective_scan") & (df["backend"] != "mamba_ssm")]
    assert set(scan["backend"]) == {"triton", "torch"}
    for _, r in scan.iterrows():
        want = times.get((r["batch"], r["dim"], r["dtype"], r["seq_len"], r["pass"]))
        if want is None:  # the narrow shape's forward+backward: the CSV has none
            assert r["shape_name"].startswith("narrow") and r["pass"] == "fwdbwd"
            assert r["official_source"] == "none" and math.isnan(r["official_ms"])
            continue
        assert r["official_source"] == "reference_csv" and r["official_csv"] == "official.csv"
        assert r["official_ms"] == want and r["vs_official"] == pytest.approx(want / r["time_ms"])
    # the long-sequence path forced on splits the sequence, forced off does not
    seg = fused.set_index(["shape_name", "pass"])["triton_fwd_segments"]
    assert seg[("narrow", "fwd")] > 1 and seg[("narrow_plain", "fwd")] == 1
    assert fused.set_index(["shape_name", "pass"]).loc[("narrow", "fwdbwd"), "triton_bwd_segments"] > 1
    # the report opens with the targets table
    text = write_profile_report(tmp_path / "kernel_targets")
    assert "## Targets: the fused scan against the official mamba_ssm kernel" in text
    assert "reference_csv" in text
    # its rows in the preset's order of shapes
    order = [text.index(f"| {n}: ") for n in ("paper", "b8", "narrow", "narrow_plain", "table1", "induction")]
    assert order == sorted(order) and "paper: B=1, D=2, N=4, bf16" in text
    assert "long-sequence path forced on" in text and "long-sequence path off" in text


# -- launch-parameter sweeps: scripts/scan_sweeps.py ---------------------------------------------------------------

def _sweeps_module():
    spec = importlib.util.spec_from_file_location("scan_sweeps", REPO / "scripts" / "scan_sweeps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scan_sweeps_split_rows_through_the_profilers_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    sw = _sweeps_module()
    monkeypatch.setattr(sw, "SPLIT_SHAPES", [(1, 2, 128)])
    monkeypatch.setattr(sw, "SPLIT_TARGETS", (None, 16))
    monkeypatch.setattr(sw.ts, "DEFAULT_CONFIG", sw.ts.INTERPRETER_CONFIG)  # 64-step blocks: L 128 can split
    assert sw.main(["--sections", "split", "--device", "cpu", "--results-root", str(tmp_path), "--warmup-ms", "0.5",
                    "--rep-ms", "1"]) == 0
    rows = pd.DataFrame(load_all(tmp_path / "scan_sweeps"))
    assert set(rows["kind"]) == {"kernel_sweep"} and set(rows["section"]) == {"split"}
    assert len(rows) == 4 and (rows["ms"] > 0).all() and (rows["copy_gbps"] > 0).all()
    seg = rows.set_index(["pass_", "target_warps_per_sm"])["segments"]
    assert seg[("fwd", 0)] == 1 and seg[("fwd", 16)] > 1 and seg[("bwd", 16)] > 1
    summary = (tmp_path / "scan_sweeps" / "summary.md").read_text()
    assert "# Scan kernel sweeps" in summary and "## split" in summary
    assert (tmp_path / "scan_sweeps" / "rows.csv").exists()
    with pytest.raises(SystemExit):
        sw.main(["--sections", "paper"])  # the benchmarks of record are the profiler's now


@pytest.mark.slow
def test_scan_sweeps_copies_rows_name_the_copies_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    sw = _sweeps_module()
    monkeypatch.setattr(sw, "COPIES_SHAPES", [(2, 4, 40)])
    monkeypatch.setattr(sw, "COPIES", (None, 3, 16))
    monkeypatch.setattr(sw.ts, "DEFAULT_CONFIG", sw.ts.INTERPRETER_CONFIG)
    assert sw.main(["--sections", "copies", "--device", "cpu", "--results-root", str(tmp_path), "--warmup-ms",
                    "0.5", "--rep-ms", "1"]) == 0
    rows = pd.DataFrame(load_all(tmp_path / "scan_sweeps")).set_index("copies")
    assert list(rows.index) == ["rule", 3, 16] and (rows["ms"] > 0).all()
    # the rule, at toy sizes, gives as many copies as channels (4, within the 8 MiB floor); a fixed 16 is capped
    # at the 4 channels too, and the row says what was used
    assert list(rows["copies_used"]) == [4, 3, 4]
    assert "## copies" in (tmp_path / "scan_sweeps" / "summary.md").read_text()
