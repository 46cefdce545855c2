"""The batched ensemble (ssmbench.ensemble): k runs stepped as one must each train as that run alone would."""

import warnings

import pytest
import torch

from ssmbench.ensemble import EnsembleStep, build_members
from ssmbench.models.lm import LanguageModel
from ssmbench.run import prepare
from ssmbench.step import TrainStep

from .helpers import compose_cfg, tiny_overrides

SEEDS = (0, 1, 2)
STEPS = 8
# A small clip, so that clipping acts on every step: a norm over the whole ensemble instead of each member's own
# would change every member's update (test_a_global_clip_would_fail checks that it shows).
TRAINER = ["device=cpu", "trainer.precision=fp32", "trainer.grad_clip=0.05", "trainer.warmup_steps=2",
           f"trainer.steps={STEPS}"]
EXTRA = {"mamba": ["model.layer.scan_backend=torch"],  # the pure-torch scan (the CPU's "auto" picks it too)
         "hyena": ["+model.layer.filter_order=8"]}  # a small filter FFN: faster, same code


def _overrides(model: str) -> list[str]:
    return tiny_overrides(model) + TRAINER + EXTRA.get(model, [])


def _preps(model: str, seeds=SEEDS, extra=()):
    return [prepare(compose_cfg(_overrides(model) + [f"seed={s}", *extra])) for s in seeds]


def _data_gens(seeds=SEEDS):
    return [torch.Generator().manual_seed(1000 + s) for s in seeds]


def _solo(p, steps: int, resume=None):
    """A solo run as ssmbench.run builds and steps it; returns (losses, model, TrainStep, generator)."""
    torch.manual_seed(p.cfg.seed)
    model = LanguageModel(p.model_cfg, p.task.vocab_size)
    step = TrainStep(model, p.task, p.trainer, p.device, p.precision, "eager")
    gen = torch.Generator().manual_seed(1000 + p.cfg.seed)
    if resume is not None:
        state, done, gen_state = resume
        model.load_state_dict(state["model"])
        step.load_state_dict(state["train_step"], done)
        gen.set_state(gen_state)
    losses = []
    for _ in range(steps):
        step(p.task.sample(p.trainer.batch_size, None, gen))
        losses.append(step.meters.read()["last_loss"])
    return losses, model, step, gen


def _ensemble(preps, steps: int, ens=None, gens=None):
    ens = ens or EnsembleStep(build_members(preps), preps[0].task, preps[0].trainer, preps[0].device,
                              preps[0].precision)
    gens = gens or _data_gens([p.cfg.seed for p in preps])
    losses = []
    for _ in range(steps):
        ens(ens.sample(gens))
        losses.append([r["last_loss"] for r in ens.meters.read()])
    return losses, ens, gens


def _close_losses(solo: list[float], ens: list[float], rtol: float = 1e-5):
    for a, b in zip(solo, ens):
        assert abs(a - b) <= rtol * abs(a), (solo, ens)


def _close_states(a: dict, b: dict, atol: float = 1e-5):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol, rtol=1e-4), \
            (key, (a[key].float() - b[key].float()).abs().max())


@pytest.mark.parametrize("model", ["mamba", "transformer", "s4", "h3", "hyena"])
def test_each_member_trains_as_the_same_run_alone(model):
    preps = _preps(model)
    with warnings.catch_warnings():  # SDPA's CPU flash kernel has no batching rule: vmap loops it (slow, correct)
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        ens_losses, ens, _ = _ensemble(preps, STEPS)
    for i, p in enumerate(preps):
        solo_losses, solo_model, _, _ = _solo(p, STEPS)
        _close_losses(solo_losses, [row[i] for row in ens_losses])
        _close_states(solo_model.state_dict(), ens.member_model_state(i))
    # the members are different runs: their seeds gave different weights and data
    assert len({round(row[0], 6) for row in zip(*ens_losses)}) == len(preps)


def test_meters_read_one_row_per_member_and_keep_each_members_first_bad_step():
    preps = _preps("mamba", seeds=(0, 1))
    _, ens, gens = _ensemble(preps, 2)
    ens.meters.add(torch.tensor([1.0, float("nan")]), torch.tensor([1, 2]), torch.tensor([4, 4]), ens.step_t)
    rows = ens.meters.read()
    assert [r["first_bad_step"] for r in rows] == [-1, 2]
    assert [r["accuracy"] for r in rows] == [0.25, 0.5] and rows[0]["steps"] == 1


def test_a_global_clip_would_fail():
    # The comparison above can fail: clipping by one norm over all members trains each member differently.
    preps = _preps("mamba")
    solo = [_solo(p, 4)[0] for p in preps]

    def global_clip(self):
        torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)

    ens = EnsembleStep(build_members(preps), preps[0].task, preps[0].trainer, preps[0].device, preps[0].precision)
    ens.clip_per_member = global_clip.__get__(ens)
    losses, _, _ = _ensemble(preps, 4, ens=ens)
    worst = max(abs(s[t] - losses[t][i]) / abs(s[t]) for i, s in enumerate(solo) for t in range(4))
    assert worst > 1e-3, worst


def test_member_state_continues_as_a_solo_run_and_back():
    preps = _preps("mamba")
    whole = [_solo(p, 8)[0] for p in preps]
    # ensemble 4 steps -> member 1 continues alone for 4
    _, ens, gens = _ensemble(preps, 4)
    state = ens.member_state(1)
    rest, _, _, _ = _solo(preps[1], 4, resume=(state, 4, gens[1].get_state()))
    _close_losses(whole[1][4:], rest)
    # solo runs 4 steps -> their checkpoints continue as members of a fresh ensemble
    fresh = EnsembleStep(build_members(preps), preps[0].task, preps[0].trainer, preps[0].device, preps[0].precision)
    solo_gens = []
    for i, p in enumerate(preps):
        _, model, step, gen = _solo(p, 4)
        fresh.load_member_state(i, {"model": model.state_dict(), "train_step": step.state_dict()}, 4)
        solo_gens.append(gen)
    losses, fresh, _ = _ensemble(preps, 4, ens=fresh, gens=solo_gens)
    for i in range(len(preps)):
        _close_losses(whole[i][4:], [row[i] for row in losses])
    # and a member's state goes through the ensemble unchanged
    again = fresh.member_state(2)
    fresh.load_member_state(2, again, 8)
    _close_states(again["model"], fresh.member_model_state(2), atol=0)


def test_members_must_stay_at_one_step():
    preps = _preps("mamba", seeds=(0, 1))
    _, ens, gens = _ensemble(preps, 2)
    ens.load_member_state(0, ens.member_state(1), 5)
    with pytest.raises(RuntimeError, match=r"members are at different steps \[5, 2\]"):
        ens(ens.sample(gens))


def test_bf16_autocast_runs():
    preps = _preps("mamba", seeds=(0, 1), extra=["trainer.precision=bf16"])
    losses, ens, _ = _ensemble(preps, 2)
    assert ens.dtype == torch.bfloat16 and all(torch.isfinite(torch.tensor(losses)).flatten())


def test_errors_name_the_problem():
    p = _preps("mamba", seeds=(0,))[0]
    with pytest.raises(ValueError, match="k >= 1 members, got k=0"):
        EnsembleStep([], p.task, p.trainer, p.device, p.precision)
    with pytest.raises(ValueError, match="k >= 1 members, got k=0"):
        build_members([])
    # runs that differ in more than the seed
    other = prepare(compose_cfg(_overrides("mamba") + ["seed=1", "trainer.lr=0.01"]))
    with pytest.raises(ValueError, match=r"member 1 differs from member 0 in trainer\.lr: 0\.002 vs 0\.01"):
        build_members([p, other])
    wider = prepare(compose_cfg(_overrides("mamba") + ["seed=1", "model.d_model=8"]))
    with pytest.raises(ValueError, match=r"model\.d_model: 16 vs 8"):
        EnsembleStep([LanguageModel(p.model_cfg, p.task.vocab_size), LanguageModel(wider.model_cfg, p.task.vocab_size)],
                     p.task, p.trainer, p.device, p.precision)
    # a family vmap cannot batch: the LSTM layer
    lstm = _preps("lstm", seeds=(0, 1))
    with pytest.raises(ValueError, match=r"model 'lstm' cannot be trained as a batched ensemble: layer "
                                         r"blocks\.0\.layer\.rnn \(LSTM\) fails under torch\.func\.vmap: .*lstm"):
        EnsembleStep(build_members(lstm), lstm[0].task, lstm[0].trainer, lstm[0].device, lstm[0].precision)


def test_one_member_is_a_solo_run():
    p = _preps("s4", seeds=(3,))
    losses, ens, _ = _ensemble(p, 3)
    solo, model, _, _ = _solo(p[0], 3)
    _close_losses(solo, [row[0] for row in losses])
    _close_states(model.state_dict(), ens.member_state(0)["model"])


@pytest.mark.parametrize("corruption, message", [(lambda t: t * 1.5, "logits differs from the member run alone"),
                                                 (lambda t: t + float("nan"), "logits is not finite")])
def test_a_batching_rule_that_computes_something_else_is_refused(monkeypatch, corruption, message):
    """On the GPU a Transformer ensemble's loss went non-finite while each member alone trained (trainbench, commit
    c0e240b): a layer whose vmapped path differs from its solo one must be refused when the ensemble is built."""
    preps = _preps("transformer", seeds=(0, 1))
    real = EnsembleStep._member_logits

    def batched_differs(self, params, buffers, inputs):
        out = real(self, params, buffers, inputs)
        return corruption(out) if torch._C._functorch.is_batchedtensor(out) else out

    monkeypatch.setattr(EnsembleStep, "_member_logits", batched_differs)
    with pytest.raises(ValueError, match=f"model 'transformer' cannot be trained as a batched ensemble on cpu: "
                                         f"under torch.func.vmap member 0's {message}"):
        EnsembleStep(build_members(preps), preps[0].task, preps[0].trainer, preps[0].device, preps[0].precision)


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["transformer", "mamba"])
def test_a_bf16_ensemble_on_cuda_follows_its_members_alone(model):
    """The trainbench's setting (CUDA, bf16 autocast, the induction shape): at commit c0e240b the Transformer
    ensemble's loss went non-finite there while Mamba's did not. Each member must train as it does alone, within
    bf16's drift."""
    over = ["device=cuda", "trainer.precision=bf16", "experiment=induction", "trainer.batch_size=8",
            f"model={model}", "trainer.steps=30"]
    preps = [prepare(compose_cfg(over + [f"seed={s}"])) for s in (0, 1)]
    ens = EnsembleStep(build_members(preps), preps[0].task, preps[0].trainer, preps[0].device, preps[0].precision)
    gens = [torch.Generator("cuda").manual_seed(1000 + s) for s in (0, 1)]
    ens_losses = []
    for _ in range(30):
        ens(ens.sample(gens))
        ens_losses.append([r["last_loss"] for r in ens.meters.read()])
    assert all(r["first_bad_step"] == -1 for r in ens.meters.read()), ens_losses
    for i, p in enumerate(preps):
        torch.manual_seed(p.cfg.seed)
        solo = TrainStep(LanguageModel(p.model_cfg, p.task.vocab_size).to("cuda"), p.task, p.trainer, p.device,
                         p.precision, "eager")
        gen = torch.Generator("cuda").manual_seed(1000 + p.cfg.seed)
        losses = []
        for _ in range(30):
            solo(p.task.sample(p.trainer.batch_size, None, gen))
            losses.append(solo.meters.read()["last_loss"])
        mine = [row[i] for row in ens_losses]
        assert abs(sum(losses[-10:]) - sum(mine[-10:])) <= 0.03 * sum(losses[-10:]), (i, losses, mine)
