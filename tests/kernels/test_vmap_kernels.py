"""torch.func.vmap over the Triton selective scan and causal conv1d (their autograd Functions' vmap rules, which
fold the vmapped members into channels): values and every gradient equal the members' own calls. CPU: the
Triton interpreter at tiny shapes."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from ssmbench.kernels.causal_conv1d import causal_conv1d_fn
from ssmbench.kernels.selective_scan import selective_scan

from .triton_testing import DEV, rel_err, triton_mode  # noqa: F401  (triton_mode: autouse)

K = 3  # members


def _members(batch, dim, L, N, bc, groups, seed):
    """k members' scan arguments, stacked: {name: [K, ...]} (bc: var | groups | fixed | mixed)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0):
        return (torch.randn(K, *s, generator=g) * scale).to(DEV)

    def bc_tensor(fixed):
        if fixed:
            return r(dim, N)
        return r(batch, groups, N, L) if bc == "groups" else r(batch, N, L)

    return dict(u=r(batch, dim, L), delta=r(batch, dim, L, scale=0.5),
                A=-(torch.rand(K, dim, N, generator=g) * 2 + 0.1).to(DEV), B=bc_tensor(bc == "fixed"),
                C=bc_tensor(bc in ("fixed", "mixed")), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim, scale=0.3))


def _leaves(inp):
    return {k: v.clone().requires_grad_() for k, v in inp.items()}


def _compare(out_v, out_m, leaves_v, leaves_m, tol=1e-5):
    """Values of the vmapped and per-member calls, then the gradients of one random projection of both."""
    errs = {f"out{j}": rel_err(a, b) for j, (a, b) in enumerate(zip(out_v, out_m))}
    g = torch.Generator().manual_seed(7)
    cot = [torch.randn(o.shape, generator=g).to(o) for o in out_m]
    grads_v = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out_v, cot)), list(leaves_v.values()))
    grads_m = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out_m, cot)), list(leaves_m.values()))
    for name, a, b in zip(leaves_v, grads_v, grads_m):
        errs["d" + name] = rel_err(a, b)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative errors over {tol}: {bad} (all: {errs})"


@pytest.mark.parametrize("bc,groups", [("var", 1), ("groups", 2), ("fixed", 1), ("mixed", 1)])
def test_vmapped_scan_equals_each_members_scan(bc, groups):
    inp = _members(2, 4, 37, 3, bc, groups, seed=groups + len(bc))
    lv, lm = _leaves(inp), _leaves(inp)

    def scan(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=True,
                              return_last_state=True, backend="triton")

    out_v = vmap(scan)(*lv.values())
    per = [scan(*(v[i] for v in lm.values())) for i in range(K)]
    out_m = [torch.stack([p[j] for p in per]) for j in range(2)]
    _compare(out_v, out_m, lv, lm)


def test_vmapped_scan_with_a_shared_argument_and_no_optional_ones():
    # B shared by all members (not vmapped), no D, z or delta_bias, and the output alone (no last state)
    inp = _members(1, 2, 20, 4, "var", 1, seed=11)
    B = inp.pop("B")[0].clone().requires_grad_()
    for name in ("D", "z", "delta_bias"):
        inp.pop(name)
    lv, lm = _leaves(inp), _leaves(inp)

    def scan(u, delta, A, C, B):
        return selective_scan(u, delta, A, B, C, delta_softplus=True, backend="triton")

    out_v = vmap(scan, in_dims=(0, 0, 0, 0, None))(*lv.values(), B)
    out_m = torch.stack([scan(*(v[i] for v in lm.values()), B) for i in range(K)])
    _compare([out_v], [out_m], {**lv, "B": B}, {**lm, "B": B})


@pytest.mark.parametrize("bias", [True, False])
def test_vmapped_conv_equals_each_members_conv(bias):
    g = torch.Generator().manual_seed(3)
    inp = {"x": torch.randn(K, 2, 5, 30, generator=g), "weight": torch.randn(K, 5, 4, generator=g) / 4}
    if bias:
        inp["bias"] = torch.randn(K, 5, generator=g)
    inp = {k: v.to(DEV) for k, v in inp.items()}
    lv, lm = _leaves(inp), _leaves(inp)

    def conv(x, weight, bias=None):
        return causal_conv1d_fn(x, weight, bias, "silu", backend="triton")

    out_v = vmap(conv)(*lv.values())
    out_m = torch.stack([conv(*(v[i] for v in lm.values())) for i in range(K)])
    _compare([out_v], [out_m], lv, lm)


def test_a_mamba_ensemble_trains_on_the_triton_kernels_as_its_members_alone(monkeypatch):
    # The whole path a GPU ensemble takes: the Mamba block's channel-major layout, the Triton conv and scan, all
    # under the ensemble's vmap; each member's losses and weights equal its solo run's on the same kernels.
    from ssmbench.ensemble import EnsembleStep, build_members
    from ssmbench.models.blocks import MambaBlock
    from ssmbench.models.lm import LanguageModel
    from ssmbench.run import prepare
    from ssmbench.step import TrainStep

    from ..ssmbench.helpers import compose_cfg, tiny_overrides

    monkeypatch.setattr(MambaBlock, "layout", "channel")  # what "auto" takes on CUDA
    over = tiny_overrides("mamba") + [f"device={DEV}", "trainer.precision=fp32", "trainer.grad_clip=0.05",
                                      "trainer.batch_size=2", "model.d_model=8", "task.seq_len=16",
                                      "model.layer.scan_backend=triton"]
    preps = [prepare(compose_cfg(over + [f"seed={s}"])) for s in (0, 1)]
    p0, steps = preps[0], 2
    ens = EnsembleStep(build_members(preps), p0.task, p0.trainer, p0.device, p0.precision)
    gens = [torch.Generator(DEV).manual_seed(10 + s) for s in (0, 1)]
    ens_losses = []
    for _ in range(steps):
        ens(ens.sample(gens))
        ens_losses.append([r["last_loss"] for r in ens.meters.read()])
    for i, p in enumerate(preps):
        torch.manual_seed(p.cfg.seed)
        model = LanguageModel(p.model_cfg, p.task.vocab_size).to(p.device)
        solo = TrainStep(model, p.task, p.trainer, p.device, p.precision, "eager")
        gen = torch.Generator(DEV).manual_seed(10 + p.cfg.seed)
        for t in range(steps):
            solo(p.task.sample(p.trainer.batch_size, None, gen))
            loss = solo.meters.read()["last_loss"]
            assert abs(loss - ens_losses[t][i]) <= 1e-5 * abs(loss), (i, t, loss, ens_losses)
        theirs = ens.member_model_state(i)
        for key, value in model.state_dict().items():
            assert torch.allclose(value, theirs[key], atol=1e-5, rtol=1e-4), key
