"""Every model in conf/model/: step() equals forward(), causality, optimizer groups, config errors."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ssmbench.models.lm import LanguageModel, ModelConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
MODEL_NAMES = sorted(p.stem for p in CONF.glob("*.yaml"))
VOCAB = 11


def load(name: str, **over) -> ModelConfig:
    raw = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    raw.pop("defaults", None)
    raw.update(d_model=16, n_layers=2, **over)
    layer = raw["layer"]
    if "d_state" in layer:
        layer["d_state"] = 4
    if layer["name"] == "attention":
        layer["n_heads"] = 2
    if layer["name"] == "hyena":
        layer["filter_order"] = 8
    return ModelConfig(**raw)


def build(name: str, **over) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(load(name, **over), VOCAB).eval()


def test_zoo_has_every_family():
    assert {"transformer", "transformer_abs", "transformer_xpos", "lstm", "gru", "elman", "s4", "h3", "hyena",
            "mamba", "s6_nogate", "s6_h3", "mamba_s4", "mamba_hyena"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_step_matches_forward(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (3, 37))
    with torch.no_grad():
        full = model(x)
        cache = model.allocate_cache(3, x.shape[1])
        steps = []
        for t in range(x.shape[1]):
            logits = model.step(x[:, t], cache)
            steps.append(logits)
    steps = torch.stack(steps, dim=1)
    assert full.shape == (3, 37, VOCAB)
    rel = (steps - full).norm() / full.norm()
    assert rel < 1e-5, f"{name}: step() differs from forward() by {rel:.2e}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_causal(name):
    model = build(name)
    x = torch.randint(0, VOCAB, (2, 40))
    t = 23
    x2 = x.clone()
    x2[:, t + 1:] = torch.randint(0, VOCAB, (2, 40 - t - 1))
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_trains_one_step_and_ssm_params_fp32_without_decay(name):
    model = build(name).train()
    groups = model.param_groups(weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g["name"]: [names[id(p)] for p in g["params"]] for g in groups}
    all_params = [n for n, _ in model.named_parameters()]
    assert sorted(sum(by_group.values(), [])) == sorted(all_params)  # every parameter exactly once
    ssm = [n for g, names in by_group.items() if g.startswith("ssm") for n in names]
    if model.cfg.layer["name"] in ("s4", "s6", "hyena"):
        assert ssm, f"{name}: no SSM parameter group"
    params = dict(model.named_parameters())
    for n in ssm:
        assert params[n].dtype == torch.float32
    assert all(g["weight_decay"] == 0 for g in groups if g["name"] != "decay")
    opt = torch.optim.AdamW(groups, lr=1e-3)
    x = torch.randint(0, VOCAB, (2, 16))
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    opt.step()


def test_bf16_autocast_forward_runs():
    model = build("mamba")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randint(0, VOCAB, (2, 20)))
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("over, needle", [
    ({"arch": "transformerz"}, "model.arch"),
    ({"layer": {"name": "lstm"}}, "model.layer.name"),
    ({"layer": {"name": "attention", "n_heads": 3}}, "n_heads"),
    ({"layer": {"name": "s6", "d_stat": 3}}, "model.layer.d_stat"),
    ({"layer": {"name": "s6", "d_state": "big"}}, "d_state"),
    ({"layer": {"name": "s4", "init": "fourier"}}, "init"),
    ({"layer": {"name": "rnn", "cell": "tcn"}}, "model.layer.cell"),
    ({"norm": "batchnorm"}, "model.norm"),
    ({"pos_emb": "alibi"}, "model.pos_emb"),
    ({"n_layers": 0}, "model.n_layers"),
])
def test_bad_model_config_names_key(over, needle):
    cfg = ModelConfig(**{**dict(name="x", arch="transformer", layer={"name": "attention"}, d_model=16), **over})
    with pytest.raises(ValueError, match=needle):
        LanguageModel(cfg, VOCAB)


def test_learned_positions_refuse_longer_sequences():
    model = build("transformer", pos_emb="learned", max_len=32)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.randint(0, VOCAB, (1, 33)))


def test_mha_abs_learns_its_positions_and_unit_sinusoids_warn():
    """MHA-Abs is a learned position table at the tokens' scale, long enough for the paper's lengths (to 2^14);
    the unit-amplitude sinusoids beside 0.02-std tokens (what kept MHA-Abs at chance) still build, with a warning."""
    cfg = load("transformer_abs")
    assert cfg.pos_emb == "learned" and cfg.max_len == 2 ** 14
    model = build("transformer_abs")
    assert model.pos.weight.std().item() == pytest.approx(model.embed.weight.std().item(), rel=0.2)
    with pytest.warns(UserWarning, match="pos_emb=sinusoidal.*35x"):
        build("transformer_abs", pos_emb="sinusoidal", max_len=4096)
