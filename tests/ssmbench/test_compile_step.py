"""trainer.compile: the step's forward and loss through torch.compile follow the uncompiled step; a compile that
fails leaves the step uncompiled with the reason; the key never moves a run id."""

import pytest
import torch

from ssmbench.results import run_id
from ssmbench.run import RunConfigError, prepare

from .helpers import compose_cfg, tiny_overrides, train_losses


def _losses(model_name: str, compile_mode: str, steps: int, device: str = "cpu", mode: str = "eager"):
    return train_losses(model_name, mode, steps, [f"trainer.compile={compile_mode}"], device=device)


def test_a_compiled_step_follows_the_uncompiled_one_on_the_cpu():
    """H3 (S4's FFT convolution, the shift SSM, gating): what compile is for on Table 1's LTI rows."""
    torch._dynamo.reset()
    plain, _ = _losses("h3", "none", 6)
    compiled, step = _losses("h3", "default", 6)
    assert step.compile == "default" and step.reason == "", step.reason
    for a, b in zip(plain, compiled):
        assert abs(a - b) <= 1e-4 * abs(a), (plain, compiled)


def test_a_failing_compile_trains_uncompiled_and_says_why(monkeypatch):
    def broken_compile(fn, **_):
        def run(*a, **k):
            raise RuntimeError("inductor: no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    plain, _ = _losses("s4", "none", 3)
    fell_back, step = _losses("s4", "default", 3)
    assert step.compile == "none" and "torch.compile(mode='default') failed" in step.reason
    assert "no C++ compiler" in step.reason
    assert fell_back == plain


def test_compile_is_an_invocation_key_and_bad_values_name_it():
    ids = set()
    for value in ("none", "default"):
        p = prepare(compose_cfg(tiny_overrides("s4") + ["device=cpu", f"trainer.compile={value}"]))
        ids.add(run_id(p.identity))
    assert len(ids) == 1  # a paused run can continue compiled, or not
    with pytest.raises(RunConfigError, match="trainer.compile"):
        prepare(compose_cfg(tiny_overrides("s4") + ["trainer.compile=reduce-overhead"]))


@pytest.mark.gpu
@pytest.mark.parametrize("model_name", ["h3", "mamba"])
def test_a_compiled_graphed_step_follows_the_eager_one_on_cuda(model_name):
    """Compiled code inside the captured step (step_mode=graphs), as Table 1 would train with it."""
    torch._dynamo.reset()
    eager, _ = _losses(model_name, "none", 30, device="cuda", mode="eager")
    both, step = _losses(model_name, "default", 30, device="cuda", mode="graphs")
    assert step.mode == "graphs" and step.compile == "default", step.reason
    for a, b in zip(eager[:5], both[:5]):
        assert abs(a - b) <= 1e-3 * abs(a), (eager, both)
    tail_e, tail_b = sum(eager[-10:]) / 10, sum(both[-10:]) / 10
    assert abs(tail_e - tail_b) <= 0.02 * tail_e, (eager, both)
