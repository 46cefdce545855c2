"""kernels/common/options.py: the step's implementation choices (environment variables, never in the config)
change how, not what: a model trains the same under each, and a bad value is an error naming the variable."""

from __future__ import annotations

import pytest
import torch

from ssmbench.kernels.common.options import DEFAULT, LEGACY, OPTIONS, describe, option
from ssmbench.models.blocks import RMSNorm, make_norm
from ssmbench.models.lm import LanguageModel

from ..ssmbench.helpers import compose_cfg, tiny_overrides


def _model(name: str = "mamba", seed: int = 0) -> tuple[LanguageModel, torch.Tensor]:
    from ssmbench.run import prepare
    p = prepare(compose_cfg(tiny_overrides(name) + ["device=cpu"]))
    torch.manual_seed(seed)
    model = LanguageModel(p.model_cfg, p.task.vocab_size)
    inputs = p.task.sample(3, None, torch.Generator().manual_seed(seed)).inputs
    return model, inputs


def _loss_and_grads(model, inputs):
    model.zero_grad(set_to_none=True)
    logits = model(inputs)
    g = torch.Generator().manual_seed(1)
    loss = (logits * torch.randn(logits.shape, generator=g)).sum()
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_defaults_and_description(monkeypatch):
    for name in OPTIONS:
        monkeypatch.delenv(name, raising=False)
    assert describe() == DEFAULT == ("conv_bwd=two_pass,rmsnorm=triton,embed=onehot,shift=triton,fftconv=bhl,"
                                     "mamba_lti=channel")
    assert LEGACY == "conv_bwd=fused,rmsnorm=torch,embed=gather,shift=torch,fftconv=blh,mamba_lti=token"
    monkeypatch.setenv("SSMBENCH_EMBED", "gather")
    assert option("SSMBENCH_EMBED") == "gather" and "embed=gather" in describe()
    monkeypatch.setenv("SSMBENCH_RMSNORM", "apex")
    with pytest.raises(ValueError, match=r"SSMBENCH_RMSNORM='apex' is not one of \('triton', 'torch'\)"):
        describe()


def test_a_description_from_before_an_option_existed_reads_as_its_legacy_path():
    """Rows and checkpoints written before SSMBENCH_FFTCONV existed lack it: they ran its legacy path, so a run
    resumed under the same four others and fftconv=blh adds no 'then' to its train_kernel_options."""
    from ssmbench.kernels.common.options import same
    old = "conv_bwd=two_pass,rmsnorm=triton,embed=onehot,shift=triton"
    assert same(old, old + ",fftconv=blh")
    assert not same(old, old + ",fftconv=bhl")
    assert not same(old, old.replace("two_pass", "fused") + ",fftconv=blh")


@pytest.mark.parametrize("name", ["mamba", "transformer"])
def test_onehot_embedding_gives_the_same_logits_and_gradients(monkeypatch, name):
    model, inputs = _model(name)
    monkeypatch.setenv("SSMBENCH_EMBED", "gather")
    logits, grads = _loss_and_grads(model, inputs)
    monkeypatch.setenv("SSMBENCH_EMBED", "onehot")
    calls = []
    real_one_hot = torch.nn.functional.one_hot
    monkeypatch.setattr(torch.nn.functional, "one_hot", lambda *a, **k: calls.append(1) or real_one_hot(*a, **k))
    logits2, grads2 = _loss_and_grads(model, inputs)
    assert calls, "the one-hot path did not run"
    assert torch.equal(logits, logits2)  # the forward rows are exact
    for n in grads:  # the embedding's gradient sums in another order
        assert torch.allclose(grads[n], grads2[n], rtol=1e-5, atol=1e-7), n


def test_onehot_embedding_stays_a_gather_where_it_would_round(monkeypatch):
    model, inputs = _model("mamba")
    monkeypatch.setenv("SSMBENCH_EMBED", "onehot")
    monkeypatch.setattr(torch.nn.functional, "one_hot", lambda *a, **k: pytest.fail("one-hot under TF32"))
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        model(inputs)
    finally:
        torch.set_float32_matmul_precision(before)


def test_rmsnorm_keeps_nn_rmsnorms_parameters_and_results(monkeypatch):
    norm = make_norm("rmsnorm", 8)
    assert isinstance(norm, RMSNorm) and isinstance(norm, torch.nn.RMSNorm)
    ref = torch.nn.RMSNorm(8, eps=1e-5)
    assert norm.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 8)
    monkeypatch.setenv("SSMBENCH_RMSNORM", "triton")  # on the CPU: PyTorch's, whatever the option says
    assert torch.equal(norm(x), ref(x))


def test_shift_ssm_through_the_triton_conv_equals_its_torch_path(monkeypatch):
    """H3's shift SSM as the Triton causal conv1d on x in place (SSMBENCH_SHIFT=triton), here in the interpreter:
    the same values and gradients as F.conv1d on the padded copy, for a strided x (a chunk of the qkv output)."""
    from ssmbench.models.layers.shift import ShiftSSM

    from ..kernels.triton_testing import triton_mode  # noqa: F401  (the interpreter, for this test)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    shift = ShiftSSM(6, d_state=4)
    qkv = torch.randn(2, 37, 18)
    grads = {}
    for path in ("torch", "triton"):
        x = qkv.clone().requires_grad_()
        k = x.chunk(3, dim=-1)[1]  # [2, 37, 6], row stride 18
        y = shift(k) if path == "torch" else shift.forward_triton(k)
        cot = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        grads[path] = (y.detach(), *torch.autograd.grad((y * cot).sum(), [x, shift.C, shift.D]))
    for a, b in zip(grads["torch"], grads["triton"]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba", "s6_nogate", "transformer", "h3"])
def test_a_graphed_step_trains_alike_under_every_option(monkeypatch, name):
    """On the GPU, the graphed training step with every alternative on (two-pass conv backward, Triton RMSNorm,
    one-hot embedding) follows the defaults' loss curve, as graphs follow eager (test_train_step.py)."""
    from ssmbench.run import prepare
    from ssmbench.step import TrainStep

    def losses():
        p = prepare(compose_cfg(tiny_overrides(name) + ["device=cuda", "trainer.precision=fp32"]))
        torch.manual_seed(0)
        step = TrainStep(LanguageModel(p.model_cfg, p.task.vocab_size).cuda(), p.task, p.trainer, p.device,
                         p.precision, "graphs")
        gen = torch.Generator("cuda").manual_seed(0)
        out = []
        for _ in range(30):
            step(p.task.sample(p.trainer.batch_size, None, gen))
            out.append(step.meters.read()["last_loss"])
        assert step.mode == "graphs", step.reason
        return out

    for var in OPTIONS:
        monkeypatch.delenv(var, raising=False)
    default = losses()
    for var, values in OPTIONS.items():
        monkeypatch.setenv(var, values[1])
    alternative = losses()
    for a, b in zip(default[:5], alternative[:5]):
        assert abs(a - b) <= 1e-3 * abs(a), (default, alternative)
    tail_d, tail_a = sum(default[-10:]) / 10, sum(alternative[-10:]) / 10
    assert abs(tail_d - tail_a) <= 0.02 * tail_d, (default, alternative)


def test_attention_without_cudnn_computes_the_same():
    """The batched ensemble's attention backends on CUDA (flash, efficient, math: cuDNN left out) give the same
    attention as the default choice; here on the CPU, where the context is exercised but cuDNN never runs."""
    import torch.nn.functional as F

    from ssmbench.models.layers.attention import sdpa_context
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))
    with sdpa_context("auto_without_cudnn"):
        restricted = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(restricted, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
