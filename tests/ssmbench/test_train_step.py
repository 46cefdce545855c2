"""The training step: device-side meters, step modes, and (on a GPU) graphs that follow eager's loss curve."""

import math
import threading
import time

import pytest
import torch

from ssmbench.models.lm import LanguageModel
from ssmbench.run import prepare
from ssmbench.step import Meters, TrainStep, lr_factor, resolve_step_mode

from .helpers import compose_cfg, tiny_overrides, train_losses


def test_meters_keep_the_first_non_finite_step_and_reset_the_window():
    m = Meters(torch.device("cpu"))
    for i, loss in enumerate([1.0, 3.0, float("nan"), 2.0, float("inf")]):
        m.add(torch.tensor(loss), torch.tensor(1), torch.tensor(4), torch.tensor(i))
    r = m.read()
    assert r["first_bad_step"] == 2 and r["steps"] == 5 and r["accuracy"] == 0.25
    assert math.isinf(r["last_loss"])
    m.add(torch.tensor(0.5), torch.tensor(2), torch.tensor(4), torch.tensor(5))
    r = m.read()
    assert r["steps"] == 1 and r["loss"] == 0.5 and r["accuracy"] == 0.5 and r["first_bad_step"] == 2


def test_meters_keep_the_largest_gradient_norm_of_each_window():
    from ssmbench.step import max_grad_norm

    one = (torch.tensor(1.0), torch.tensor(1), torch.tensor(4))
    m = Meters(torch.device("cpu"))
    m.add(*one, torch.tensor(0))  # a step without clipping computes no norm
    assert m.read()["grad_norm_max"] is None
    for i, norm in enumerate([1.0, 3.0, 2.0]):
        m.add(*one, torch.tensor(i), torch.tensor(norm))
    assert m.read()["grad_norm_max"] == 3.0
    m.add(*one, torch.tensor(3), torch.tensor(0.5))
    assert m.read()["grad_norm_max"] == 0.5  # the window starts again at each read
    # windows folded into the maximum since a check: None where none had a norm, a NaN kept
    assert max_grad_norm(None, None) is None and max_grad_norm(None, 2.0) == 2.0 and max_grad_norm(3.0, 2.0) == 3.0
    assert math.isnan(max_grad_norm(float("nan"), 2.0)) and math.isnan(max_grad_norm(2.0, float("nan")))


def test_the_step_meters_the_norm_that_clipping_saw(monkeypatch):
    seen = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: seen.append(clip(*a, **k)) or seen[-1])
    p = prepare(compose_cfg(tiny_overrides("mamba") + ["device=cpu", "trainer.precision=fp32"]))
    torch.manual_seed(0)
    step = TrainStep(LanguageModel(p.model_cfg, p.task.vocab_size), p.task, p.trainer, p.device, p.precision, "eager")
    gen = torch.Generator().manual_seed(0)
    read = []
    for _ in range(3):
        step(p.task.sample(p.trainer.batch_size, None, gen))
        read.append(step.meters.read()["grad_norm_max"])
    assert read == [float(n) for n in seen] and len(set(read)) == 3 and all(n > 0 for n in read)


def test_step_modes_and_their_errors():
    cpu = torch.device("cpu")
    assert resolve_step_mode("auto", cpu) == "eager"
    with pytest.raises(ValueError, match="trainer.step_mode=graphs needs a CUDA device"):
        resolve_step_mode("graphs", cpu)
    with pytest.raises(ValueError, match="trainer.step_mode='fast'"):
        resolve_step_mode("fast", cpu)


def test_bad_step_mode_is_a_config_error_naming_the_key():
    from ssmbench.run import RunConfigError
    with pytest.raises(RunConfigError, match="trainer.step_mode"):
        prepare(compose_cfg(tiny_overrides("transformer") + ["trainer.step_mode=fast"]))


def test_schedule_warms_up_then_decays():
    cfg = prepare(compose_cfg(tiny_overrides("transformer") + ["trainer.warmup_steps=4", "trainer.steps=20"])).trainer
    f = [lr_factor(cfg, s) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[-1] >= cfg.min_lr_ratio


def _losses(model_name: str, mode: str, steps: int, extra=(), norms=None) -> tuple[list[float], TrainStep]:
    return train_losses(model_name, mode, steps, extra, device="cuda", norms=norms)


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", ["mamba", "transformer", "s4", "h3", "hyena", "lstm", "s6_nogate"])
def test_graphed_step_follows_eager_loss_curve(model_name):
    norms_eager, norms_graphed = [], []
    eager, _ = _losses(model_name, "eager", 30, norms=norms_eager)
    graphed, step = _losses(model_name, "graphs", 30, norms=norms_graphed)
    assert step.mode == "graphs", step.reason  # captured, not fallen back
    assert step.graph is not None
    # the gradient norm that clipping saw, metered inside the graph as in eager
    for a, b in zip(norms_eager[:5], norms_graphed[:5]):
        assert abs(a - b) <= 1e-3 * abs(a), (norms_eager, norms_graphed)
    # fp32, the same arithmetic: the first steps agree closely; later ones drift apart as any two runs whose
    # reductions differ in order do (measured on an H200: ~0.3% by step 30), so the tail is compared on average.
    for a, b in zip(eager[:5], graphed[:5]):
        assert abs(a - b) <= 1e-3 * abs(a), (eager, graphed)
    tail_e, tail_g = sum(eager[-10:]) / 10, sum(graphed[-10:]) / 10
    assert abs(tail_e - tail_g) <= 0.02 * tail_e, (eager, graphed)
    assert tail_g < sum(graphed[:5]) / 5  # and it trains


@pytest.mark.gpu
def test_graphs_captured_and_replayed_in_threads_follow_the_runs_alone():
    # ssmbench.multirun: runs in threads of one process, each on its own stream, capture their steps while the
    # others replay theirs. Each must train as it does alone (within the graphed-vs-eager tolerance above).
    # Staggered starts, so that captures meet replays and eager warm-up steps of the others: on the H200 eight
    # runs started together failed that way before gpu_turns ("Cannot prepare for replay during capturing
    # stage", then illegal memory accesses).
    names = ["mamba", "transformer", "s4", "mamba", "transformer", "s4"]
    alone = {n: _losses(n, "graphs", 30)[0] for n in set(names)}
    together, errors = {}, []

    def work(i, n):
        try:
            time.sleep(0.02 * i)
            with torch.cuda.stream(torch.cuda.Stream()):
                losses, step = _losses(n, "graphs", 30)
            assert step.mode == "graphs", step.reason
            together[i] = losses
        except BaseException as e:  # noqa: BLE001  (reported below, with the run's name)
            errors.append(f"{n}: {e!r}")

    threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, n in enumerate(names):
        a, b = alone[n], together[i]
        for x, y in zip(a[:5], b[:5]):
            assert abs(x - y) <= 1e-3 * abs(x), (n, a, b)
        assert abs(sum(a[-10:]) - sum(b[-10:])) <= 0.02 * sum(a[-10:]), (n, a, b)


def _cpu_losses(device_schedule: bool, steps: int, resume_from=None):
    p = prepare(compose_cfg(tiny_overrides("mamba") + ["device=cpu", "trainer.warmup_steps=5"]))
    torch.manual_seed(0)
    model = LanguageModel(p.model_cfg, p.task.vocab_size)
    step = TrainStep(model, p.task, p.trainer, p.device, p.precision, "eager", device_schedule=device_schedule)
    gen = torch.Generator().manual_seed(0)
    done = 0
    if resume_from is not None:
        state, done = resume_from
        model.load_state_dict(state["model"])
        step.load_state_dict(state["train_step"], done)
        gen.set_state(state["gen"])
    losses = []
    for _ in range(steps):
        step(p.task.sample(p.trainer.batch_size, None, gen))
        losses.append(step.meters.read()["last_loss"])
    state = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "train_step": step.state_dict(),
             "gen": gen.get_state()}
    return losses, step, (state, done + steps)


def test_device_schedule_runs_the_graphs_arithmetic_and_matches_the_host_schedule():
    # The arithmetic the CUDA graph replays (lr from a device table, fused AdamW with tensor lr), run eagerly.
    host, host_step, _ = _cpu_losses(False, 12)
    dev, dev_step, _ = _cpu_losses(True, 12)
    assert dev_step.sched is None and torch.is_tensor(dev_step.opt.param_groups[0]["lr"])
    assert int(dev_step.step_t) == 12
    for a, b in zip(host, dev):
        assert abs(a - b) <= 1e-4 * abs(a), (host, dev)
    # each holds the schedule's lr: the device one the lr its 12th step used, LambdaLR the one for the next step
    base = dev_step.base_lrs[0]
    assert abs(float(dev_step.opt.param_groups[0]["lr"]) - base * lr_factor(dev_step.cfg, 11)) < 1e-9
    assert abs(host_step.opt.param_groups[0]["lr"] - base * lr_factor(host_step.cfg, 12)) < 1e-9


def test_a_checkpoint_continues_across_step_modes():
    whole, _, _ = _cpu_losses(False, 12)
    for first, second in ((True, False), (False, True)):
        _, _, state = _cpu_losses(first, 6)
        rest, _, _ = _cpu_losses(second, 6, resume_from=state)
        for a, b in zip(whole[6:], rest):
            assert abs(a - b) <= 1e-4 * abs(a), (first, whole[6:], rest)


def test_cpu_peak_memory_is_per_run_not_the_process_lifetime(monkeypatch):
    """The resident set size is faked: whether the OS takes freed memory back depends on the allocator's state,
    which earlier tests in the same process change (a freed 64 MiB tensor stayed resident in a full CI run after
    torch.compile had run), and this checks the bookkeeping, not the allocator."""
    from ssmbench import metrics

    cpu = torch.device("cpu")
    rss = iter([100, 164, 164, 100, 100])  # MiB: run 1 starts, grows by 64, ends; run 2 starts at 100
    monkeypatch.setattr(metrics, "_rss_bytes", lambda: next(rss) * 2**20)
    metrics.reset_peak_memory(cpu)
    metrics.sample_memory(cpu)
    with_big = metrics.peak_memory_bytes(cpu)
    assert with_big == 164 * 2**20
    metrics.reset_peak_memory(cpu)  # a new run: the earlier peak is not carried over
    assert metrics.peak_memory_bytes(cpu) == 100 * 2**20


def test_the_gradient_norm_maximum_since_the_last_check_survives_a_pause(tmp_path):
    # a piece that pauses between two checks keeps its maximum so far in the checkpoint; the next piece's first
    # check then covers the whole interval, as an uninterrupted run's does
    from ssmbench.checkpoint import CHECKPOINT
    from ssmbench.train import TrainResult, _checkpoint, _restore, note_grad_norm, record_check

    p = prepare(compose_cfg(tiny_overrides("mamba") + ["device=cpu", "trainer.precision=fp32"]))
    model = LanguageModel(p.model_cfg, p.task.vocab_size)
    step = TrainStep(model, p.task, p.trainer, p.device, p.precision, "eager")
    gen = torch.Generator().manual_seed(0)
    res = TrainResult()
    for window in (2.5, 7.0, None):
        note_grad_norm(res, window)
    _checkpoint(tmp_path, "r", 3, model, step, gen, res, p.device, "paused")
    resumed = TrainResult()
    _restore(torch.load(tmp_path / CHECKPOINT, weights_only=False), model, step, gen, resumed, p.device)
    note_grad_norm(resumed, 4.0)
    assert record_check(resumed, 5, {"accuracy": 0.5, "loss": 1.0}) == ", largest gradient norm 7 since the last check"
    assert resumed.history[-1] == {"step": 5, "accuracy": 0.5, "loss": 1.0, "grad_norm_max": 7.0}
    assert resumed.grad_norm_max_since_check is None  # the next interval starts afresh
