"""The profiler (kernel timings), decode throughput and the generator benchmark, at toy sizes on the CPU; the
decoders against greedy argmax of forward(); failures as rows; the reports; the Hydra apps end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from ssmbench.models.lm import ModelConfig
from ssmbench.perf import kernels as prof
from ssmbench.perf.generation import GenerationConfig, build_model, greedy_generate, make_decoder, run_generation
from ssmbench.perf.kernels import OpSpec, ProfileConfig, ShapeConfig, run_profile
from ssmbench.perf.report import DEFAULT_SERIES, plot_time_vs_length, speedup_table, write_profile_report
from ssmbench.results import load_all, write_rows

KERNEL_COLUMNS = {"kind", "op", "backend", "impl", "pass", "batch", "dim", "seq_len", "d_state", "dtype", "status",
                  "error", "time_ms", "time_p20_ms", "time_p80_ms", "samples", "timer", "peak_mem_bytes",
                  "bytes_moved", "achieved_gbps", "copy_gbps", "bw_frac", "device", "torch", "triton", "cuda",
                  "commit"}
GEN_COLUMNS = {"kind", "model", "arch", "params", "batch", "prompt_len", "gen_len", "cuda_graph", "status",
               "prefill_s", "decode_s", "tokens_per_s", "decode_tokens_per_s", "peak_mem_bytes", "state_bytes",
               "device", "torch", "commit"}


def tiny_profile(tmp_path, **over) -> ProfileConfig:
    cfg = dict(results_root=str(tmp_path), study="k", device="cpu", lengths=[8, 16],
               shapes=[ShapeConfig(batch=1, dim=16, d_state=4)], dtypes=["fp32"], head_dim=8,
               backends={"selective_scan": ["triton", "torch", "reference"], "causal_conv1d": ["torch"],
                         "s4_fft_conv": ["torch_fft"], "attention": ["sdpa_math", "sdpa_efficient"]},
               warmup_ms=0.5, rep_ms=2, copy_bytes=1 << 20, report=False)
    cfg.update(over)
    return ProfileConfig(**cfg)


def test_profile_sweep_rows_have_the_columns(tmp_path, monkeypatch):
    # Without CUDA and without the interpreter (tests/conftest.py turns it on for the kernel tests), the Triton
    # backends are unavailable: timing the interpreter would measure nothing useful.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    rows = run_profile(tiny_profile(tmp_path))
    stored = load_all(tmp_path / "k")  # written to the store, one file per series
    key = lambda r: (r["impl"], r["seq_len"], r["pass"], r["status"])  # noqa: E731
    assert sorted(map(key, stored)) == sorted(map(key, rows))
    assert len({r["run_id"] for r in rows}) == len(list((tmp_path / "k" / "rows").glob("*.json"))) == 7
    df = pd.DataFrame(rows)
    assert KERNEL_COLUMNS <= set(df.columns)
    # 7 series x 2 lengths x 2 passes
    assert len(df) == 28
    ok = df[df["status"] == "ok"]
    assert set(ok["impl"]) == {"selective_scan:torch", "selective_scan:reference", "causal_conv1d:torch",
                               "s4_fft_conv:torch_fft", "attention:sdpa_math"}
    assert (ok["time_ms"] > 0).all() and (ok["time_p20_ms"] <= ok["time_ms"]).all()
    assert (ok["time_ms"] <= ok["time_p80_ms"]).all() and (ok["bytes_moved"] > 0).all()
    assert (ok["achieved_gbps"] > 0).all() and (ok["copy_gbps"] > 0).all()
    fb = ok.set_index(["impl", "seq_len", "pass"])["bytes_moved"]
    assert (fb.xs("fwdbwd", level="pass") > fb.xs("fwd", level="pass")).all()
    # what cannot run on this CPU is a row saying why, not a crash
    bad = df[df["status"] != "ok"].set_index("impl")
    assert set(bad["status"]) == {"unavailable"}
    assert "CUDA" in bad.loc["selective_scan:triton", "error"].iloc[0]
    assert set(bad.index) == {"selective_scan:triton", "attention:sdpa_efficient"}


def _fake_op(monkeypatch, behaviours):
    """An op whose backends fail on cue: behaviour(L) runs inside build() and returns the call to time."""
    def build(backend, s, device, gen):
        call = behaviours[backend](s.seq_len)
        return prof.Case(call, call, [], 8 * s.seq_len, 16 * s.seq_len)
    monkeypatch.setitem(prof.OPS, "fake", OpSpec(tuple(behaviours), build, prof._always, 1.0))


def test_oom_error_and_slow_points_become_rows(tmp_path, monkeypatch):
    def oomy(L):
        if L >= 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return lambda: None

    def broken(L):
        raise RuntimeError("kernel exploded")

    def slow(L):
        return lambda: time.sleep(L * 0.25e-3)

    _fake_op(monkeypatch, {"oomy": oomy, "broken": broken, "slow": slow})
    cfg = tiny_profile(tmp_path, lengths=[8, 16, 32, 64], passes=["fwd"], max_call_ms=10.0,
                       backends={"fake": ["oomy", "broken", "slow"], "causal_conv1d": ["torch"]})
    df = pd.DataFrame(run_profile(cfg)).set_index(["backend", "seq_len"])
    assert df.loc[("oomy", 8), "status"] == "ok"
    assert df.loc[("oomy", 16), "status"] == "oom" and "out of memory" in df.loc[("oomy", 16), "error"]
    for L in (32, 64):  # not attempted again after the first out-of-memory
        assert df.loc[("oomy", L), "status"] == "oom" and df.loc[("oomy", L), "error"].startswith("not run")
    assert (df.loc["broken", "status"] == "error").all()
    assert df.loc[("broken", 8), "error"] == "RuntimeError: kernel exploded"
    assert df.loc[("slow", 8), "status"] == "ok"
    # 64 steps of 0.25 ms = 16 ms per call, over max_call_ms: predicted from a shorter length and skipped
    assert df.loc[("slow", 64), "status"] == "skipped" and "predicted" in df.loc[("slow", 64), "error"]
    # and the sweep went on to the next op
    assert df.loc[("torch", 8), "status"] == "ok"


def test_budget_and_length_limit_skip(tmp_path):
    cfg = tiny_profile(tmp_path, passes=["fwd"], budget_s=0.0,
                       backends={"selective_scan": ["reference"]}, limits={"selective_scan": {"reference": 8}})
    df = pd.DataFrame(run_profile(cfg)).set_index("seq_len")
    assert df.loc[8, "status"] == "skipped" and "budget" in df.loc[8, "error"]
    assert df.loc[16, "status"] == "skipped" and "limits.selective_scan.reference=8" in df.loc[16, "error"]


def test_resume_keeps_measured_points(tmp_path):
    cfg = tiny_profile(tmp_path, passes=["fwd"], backends={"causal_conv1d": ["torch"]})
    first = run_profile(cfg)
    cfg.resume = True
    cfg.lengths = [8, 16, 32]
    second = run_profile(cfg)
    by_len = {r["seq_len"]: r for r in second}
    assert by_len[8]["timestamp"] == first[0]["timestamp"] and by_len[8]["time_ms"] == first[0]["time_ms"]
    assert by_len[32]["status"] == "ok" and len(load_all(tmp_path / "k")) == 3


def test_official_times_from_the_same_process_before_the_csv_and_rows_rewritten(tmp_path, monkeypatch):
    from ssmbench.kernels.common.dispatch import Backend
    from ssmbench.kernels.selective_scan.table import SCAN_TABLE
    # the official kernel, stood in for by the reference loop, measured after the torch scan (rank 200 > 90): the
    # torch rows are written first with the CSV's times, then again with the ones measured in this process
    monkeypatch.setitem(SCAN_TABLE.rows, "mamba_ssm", Backend(".reference:scan_ref_unchecked", profile_rank=200))
    ref = tmp_path / "official.csv"
    ref.write_text("op,B,D,L,N,gated_z,fwd_ms,fwdbwd_ms\n"
                   "mamba_ssm_selective_scan_fp32,1,16,8,4,True,123.0,456.0\n"
                   "mamba_ssm_selective_scan_fp32,1,16,32,4,True,7.0,\n"
                   "mamba_ssm_selective_scan,1,16,32,4,True,99.0,99.0\n"  # bf16: not this profile's dtype
                   "mamba_ssm_selective_scan_fp32,1,16,32,4,False,99.0,99.0\n")  # ungated
    cfg = tiny_profile(tmp_path, lengths=[8, 16, 32], backends={"selective_scan": ["torch", "mamba_ssm"]},
                       limits={"selective_scan": {"mamba_ssm": 16}}, official_csv=str(ref))
    assert [s.backend for s in prof.series_of(cfg)] == ["torch", "mamba_ssm"]
    rows = run_profile(cfg)
    df = pd.DataFrame(rows).set_index(["backend", "seq_len", "pass"])
    ours = df.loc["torch"]
    for L in (8, 16):  # measured here: the same-process time wins over the CSV's
        for pas in ("fwd", "fwdbwd"):
            r, off = ours.loc[(L, pas)], df.loc[("mamba_ssm", L, pas)]
            assert off["status"] == "ok" and r["official_source"] == "same_process" and r["official_csv"] == ""
            assert r["official_ms"] == off["time_ms"] and r["vs_official"] == off["time_ms"] / r["time_ms"]
    # beyond the official series' length limit: the CSV (forward only at this length), then nothing
    assert df.loc[("mamba_ssm", 32, "fwd"), "status"] == "skipped"
    r = ours.loc[(32, "fwd")]
    assert r["official_source"] == "reference_csv" and r["official_ms"] == 7.0 and r["official_csv"] == "official.csv"
    r = ours.loc[(32, "fwdbwd")]
    assert r["official_source"] == "none" and math.isnan(r["official_ms"]) and math.isnan(r["vs_official"])
    assert "official_ms" not in df.loc["mamba_ssm"].dropna(axis=1, how="all")  # the official rows take none
    # the store holds the rewritten rows
    stored = pd.DataFrame(load_all(tmp_path / "k")).set_index(["backend", "seq_len", "pass"])
    assert list(stored.loc["torch"].sort_index()["official_source"]) == ["same_process"] * 4 + ["reference_csv",
                                                                                                 "none"]
    # resumed: nothing measured again, the official times now from an earlier run of the study
    cfg.resume = True
    again = pd.DataFrame(run_profile(cfg)).set_index(["backend", "seq_len", "pass"])
    assert list(again.loc["torch"].sort_index()["official_source"]) == ["same_study"] * 4 + ["reference_csv", "none"]
    assert (again.loc["torch"]["timestamp"] == ours["timestamp"]).all()


def test_shapes_take_their_own_lengths_passes_dtypes_and_backends(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = tiny_profile(tmp_path, backends={"causal_conv1d": ["torch"]}, shapes=[
        ShapeConfig(batch=1, dim=16, d_state=4),
        ShapeConfig(batch=2, dim=8, d_state=4, lengths=[32], passes=["fwd"], dtypes=["fp32", "bf16"],
                    backends={"selective_scan": ["torch"]}, name="own")])
    df = pd.DataFrame(run_profile(cfg))
    first = df[df["batch"] == 1]
    assert set(first["impl"]) == {"causal_conv1d:torch"} and sorted(set(first["seq_len"])) == [8, 16]
    assert "shape_name" not in first.dropna(axis=1, how="all")
    own = df[df["batch"] == 2]
    assert set(own["impl"]) == {"selective_scan:torch"} and set(own["seq_len"]) == {32} and set(own["pass"]) == {"fwd"}
    assert sorted(own["dtype"]) == ["bf16", "fp32"] and set(own["shape_name"]) == {"own"}
    # a shape's own keys enter its series' identity only when set: the run ids of existing studies stay
    plain = prof.Series("causal_conv1d", "torch", ShapeConfig(batch=1, dim=16, d_state=4), "fp32")
    assert plain.identity(torch.device("cpu"), cfg)["shape"] == {"batch": 1, "dim": 16, "d_state": 4, "max_len": None}
    with pytest.raises(prof.ProfileConfigError, match=r"shapes\[1\]\.backends\.attention"):
        run_profile(tiny_profile(tmp_path, shapes=[ShapeConfig(), ShapeConfig(backends={"attention": ["flash3"]})]))
    with pytest.raises(prof.ProfileConfigError, match=r"shapes\[0\]\.passes"):
        run_profile(tiny_profile(tmp_path, shapes=[ShapeConfig(passes=["bwd"])]))


def test_bad_profile_config_names_the_key(tmp_path):
    with pytest.raises(prof.ProfileConfigError, match="backends.attention"):
        run_profile(tiny_profile(tmp_path, backends={"attention": ["flash3"]}))
    with pytest.raises(prof.ProfileConfigError, match="dtypes"):
        run_profile(tiny_profile(tmp_path, dtypes=["fp8"]))


def _kernel_row(impl, L, pas, ms, status="ok", **kw):
    op, backend = impl.split(":")
    return {"kind": "kernel", "op": op, "backend": backend, "impl": impl, "pass": pas, "batch": 1, "dim": 1024,
            "d_state": 16, "dtype": "bf16", "seq_len": L, "status": status, "error": kw.pop("error", ""),
            "time_ms": ms, "achieved_gbps": 1000.0, "bw_frac": 0.25, "copy_gbps": 4000.0, "gated": True,
            "device": "GPU", "torch": "2", "triton": "3", "cuda": "12", "python": "3", "commit": "x", **kw}


def test_report_tables_speedups_and_plot(tmp_path):
    rows = []
    for L, t_fused in ((512, 0.02), (1024, 0.03), (2048, 0.05)):
        for pas, k in (("fwd", 1), ("fwdbwd", 4)):
            rows.append(_kernel_row("selective_scan:triton", L, pas, k * t_fused))
            rows.append(_kernel_row("selective_scan:torch", L, pas, k * t_fused * 20))
            rows.append(_kernel_row("attention:sdpa_flash", L, pas, k * t_fused * L / 512))
            rows.append(_kernel_row("causal_conv1d:triton", L, pas, 0.01))
            rows.append(_kernel_row("causal_conv1d:torch", L, pas, 0.03))
    rows.append(_kernel_row("attention:sdpa_math", 2048, "fwd", float("nan"), status="oom",
                            error="OutOfMemoryError: CUDA out of memory"))
    write_rows(tmp_path / "rows" / "a.json", rows)
    ref = tmp_path / "official.csv"
    ref.write_text("op,B,D,L,N,gated_z,fwd_ms,fwdbwd_ms\nmamba_ssm_selective_scan,1,1024,1024,16,True,0.03,0.4\n"
                   "sdpa_causal_flash,1,1024,512,,,0.03,0.2\n")
    text = write_profile_report(tmp_path, str(ref))
    assert "### Time (ms), forward" in text and "### Time (ms), forward + backward" in text
    assert "Speed-up of the fused scan" in text and "20.00x" in text  # torch scan / fused
    assert "selective_scan:mamba_ssm (ref csv)" in text
    assert "| oom" in text or "oom |" in text
    assert "Triton over PyTorch" in text and "3.00x" in text
    assert (tmp_path / "plots" / "time_vs_length_B1_D1024_N16_bf16.png").stat().st_size > 10_000
    # the default figure shows DEFAULT_SERIES; every implementation (sdpa_math, conv1d torch) is in the _all one
    assert (tmp_path / "plots" / "time_vs_length_B1_D1024_N16_bf16_all.png").stat().st_size > 10_000
    assert "plots/time_vs_length_B1_D1024_N16_bf16_all.png" in text
    only_math = pd.DataFrame([r for r in rows if r["impl"] == "causal_conv1d:torch"])
    assert plot_time_vs_length(only_math, tmp_path / "none.png", "t", DEFAULT_SERIES) is None
    assert (tmp_path / "rows.csv").exists() and json.loads((tmp_path / "environment.json").read_text())
    sp = speedup_table(pd.DataFrame(rows), "fwd")
    assert sp.loc["2^11", "attention:sdpa_flash"] == "4.00x"


# -- generation ---------------------------------------------------------------------------------------------------

def tiny_models():
    return {"mamba": ModelConfig(name="mamba", arch="mamba", layer={"name": "s6", "d_state": 4}, d_model=16,
                                 n_layers=2),
            "transformer": ModelConfig(name="transformer", arch="transformer",
                                       layer={"name": "attention", "n_heads": 2, "pos": "rope"}, d_model=16,
                                       n_layers=2)}


@pytest.mark.parametrize("name", ["mamba", "transformer"])
@pytest.mark.parametrize("micro_batch", [None, 2])
def test_decoder_tokens_equal_greedy_forward(name, micro_batch):
    model = build_model(tiny_models()[name], 23, torch.device("cpu"), torch.float32, seed=1)
    prompt = torch.randint(0, 23, (3, 9), generator=torch.Generator().manual_seed(0))
    gen_len = 7
    dec = make_decoder(model, 3, 9 + gen_len, torch.device("cpu"), torch.float32)
    tokens = greedy_generate(dec, prompt, gen_len, micro_batch=micro_batch)["tokens"]
    seq = prompt
    with torch.no_grad():
        for _ in range(gen_len):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, seq[:, 9:])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba", "transformer"])
def test_cuda_decoders_eager_and_graphed_equal_greedy_forward(name, monkeypatch):
    from ssmbench.perf.generation import decode
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the forward's conv1d: exact fp32
    dev = torch.device("cuda")
    cfg = tiny_models()[name]
    cfg.d_model = 64
    model = build_model(cfg, 101, dev, torch.float32, seed=2)
    prompt = torch.randint(0, 101, (4, 33), generator=torch.Generator(device=dev).manual_seed(0), device=dev)
    dec = make_decoder(model, 4, 33 + 8, dev, torch.float32)
    with torch.no_grad():
        first = dec.prefill(prompt).argmax(-1)
    snap = dec.snapshot()
    eager = decode(dec, first, 8, False)["tokens"]
    dec.restore(snap)
    graphed = decode(dec, first, 8, True)["tokens"]
    seq = prompt
    with torch.no_grad():
        for _ in range(8):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(eager, seq[:, 33:]) and torch.equal(graphed, seq[:, 33:])


def test_generation_rows_on_cpu(tmp_path):
    cfg = GenerationConfig(results_root=str(tmp_path), study="g", device="cpu", dtype="fp32", prompt_len=12,
                           gen_len=4, batches=[1, 3], vocab_size=29, models=tiny_models(), cuda_graphs=[False, True],
                           report=False)
    rows = run_generation(cfg)
    df = pd.DataFrame(rows)
    assert GEN_COLUMNS <= set(df.columns) and len(df) == 8
    assert (df["decode_matches_forward"] == 1.0).all()
    eager = df[~df["cuda_graph"]]
    assert (eager["status"] == "ok").all() and (eager["tokens_per_s"] > 0).all()
    assert (eager["decode_tokens_per_s"] > 0).all()
    assert (df[df["cuda_graph"]]["status"] == "unavailable").all()  # no CUDA here
    st = eager.set_index(["model", "batch"])["state_bytes"]
    assert st[("transformer", 3)] == 3 * st[("transformer", 1)]
    text = write_profile_report(tmp_path / "g")
    assert "## Mamba / Transformer throughput" in text and (tmp_path / "g" / "plots" / "throughput.png").exists()


def test_generation_oom_is_a_row_and_stops_that_model(tmp_path, monkeypatch):
    import ssmbench.perf.generation as generation
    real = generation.make_decoder

    def fake(model, batch, capacity, device, dtype):
        if model.cfg.arch == "transformer" and batch >= 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 90.00 GiB")
        return real(model, batch, capacity, device, dtype)

    monkeypatch.setattr(generation, "make_decoder", fake)
    cfg = GenerationConfig(results_root=str(tmp_path), study="g", device="cpu", dtype="fp32", prompt_len=8,
                           gen_len=3, batches=[1, 2, 4], vocab_size=17, models=tiny_models(), cuda_graphs=[False],
                           report=False)
    df = pd.DataFrame(run_generation(cfg)).set_index(["model", "batch"])
    assert df.loc[("transformer", 1), "status"] == "ok"
    assert df.loc[("transformer", 2), "status"] == "oom"
    assert df.loc[("transformer", 4), "error"].startswith("not run")
    assert (df.loc["mamba", "status"] == "ok").all()
    text = write_profile_report(tmp_path / "g")
    assert "out of memory from batch 2" in text and "at batch 1, the largest both ran" in text


# -- the generator benchmark -------------------------------------------------------------------------------------

def test_taskbench_point_measures_generator_and_step(tmp_path):
    from ssmbench.perf.tasks import ExperimentBench, TaskBenchConfig, run_taskbench
    cfg = TaskBenchConfig(results_root=str(tmp_path), study="t", device="cpu", warmup=1, repeats=2, report=False,
                          experiments={"demo": ExperimentBench(models=["mamba"])},
                          overrides=["task.seq_len=32", "task.n_data=4", "trainer.batch_size=4", "model.d_model=16",
                                     "model.layer.d_state=4"])
    (row,) = run_taskbench(cfg)
    assert row["status"] == "ok", row["error"]
    assert row["seq_len"] == 32 and row["batch_size"] == 4 and row["model"] == "mamba"
    assert 0 < row["gen_ms"] and 0 < row["step_ms"] and row["gen_fraction"] == row["gen_ms"] / row["step_ms"]
    text = write_profile_report(tmp_path / "t")
    assert "Task generators against a training step" in text and "Worst case" in text


# -- the Hydra apps, in a subprocess as a user runs them ----------------------------------------------------------

def _app(args, tmp_path, timeout=240):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ssmbench.perf.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_profile_app_end_to_end(tmp_path):
    r = _app(["kernels", "profile=cpu_smoke", f"results_root={tmp_path}", "lengths=[8,16]",
              "shapes=[{batch:1,dim:16,d_state:4}]", "rep_ms=1", "warmup_ms=0.5",
              "backends={selective_scan:[torch],attention:[sdpa_math],causal_conv1d:[torch],s4_fft_conv:[torch_fft]}"],
             tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "kernels_cpu"
    assert len(load_all(folder)) == 16
    summary = (folder / "summary.md").read_text()
    assert "selective_scan:torch" in summary and list((folder / "plots").glob("time_vs_length_*.png"))
    assert "## Targets" not in summary  # no official time at these toy shapes: no targets table


def test_profile_app_rejects_a_typo(tmp_path):
    r = _app(["kernels", "profile=cpu_smoke", f"results_root={tmp_path}", "lenghts=[8]"], tmp_path)
    assert r.returncode != 0 and "lenghts" in r.stderr
    assert not (tmp_path / "kernels_cpu" / "rows").exists()


def test_no_every_implementation_figure_when_it_would_repeat_the_default(tmp_path):
    rows = [_kernel_row(impl, L, "fwd", 0.01 * L / 512)
            for impl in ("selective_scan:triton", "attention:sdpa_flash") for L in (512, 1024)]
    write_rows(tmp_path / "rows" / "a.json", rows)
    text = write_profile_report(tmp_path, None)
    assert (tmp_path / "plots" / "time_vs_length_B1_D1024_N16_bf16.png").exists()
    assert not (tmp_path / "plots" / "time_vs_length_B1_D1024_N16_bf16_all.png").exists()
    assert "_all.png" not in text
