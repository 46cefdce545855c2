"""Issue 16: a task's Hydra schema comes from the task's own dataclass (`ssmbench.config.task_schema` over
`ssmbench.tasks.TASKS`), so adding a task is its file, its entry in the registry, conf/task/<name>.yaml and a test;
ssmbench/config.py is not touched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import OmegaConf

from ssmbench.config import task_schema, task_schemas
from ssmbench.run import prepare
from ssmbench.tasks import IGNORE, TASKS, Batch, register_task
from ssmbench.tasks.base import check_positive, sample_length

from .helpers import compose_cfg

# What ssmbench/config.py wrote by hand before the schemas were derived: same keys, order, defaults and types.
BUILT_IN = {
    "selective_copy": ("ssmbench.tasks.SelectiveCopying",
                       {"seq_len": 256, "vocab_size": 16, "n_data": 16, "selective": True}),
    "copy": ("ssmbench.tasks.Copying", {"seq_len": 256, "vocab_size": 16, "n_data": 16, "selective": False}),
    "induction": ("ssmbench.tasks.InductionHeads", {"seq_len": 256, "vocab_size": 16}),
    "mqar": ("ssmbench.tasks.MultiQueryAR", {"seq_len": 256, "vocab_size": 256, "n_pairs": 16}),
}
NODE_TYPES = {"_target_": "StringNode", "name": "StringNode", "seq_len": "IntegerNode", "vocab_size": "IntegerNode",
              "n_data": "IntegerNode", "n_pairs": "IntegerNode", "selective": "BooleanNode"}


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_schemas_are_the_hand_written_ones(name):
    target, fields = BUILT_IN[name]
    node = OmegaConf.structured(task_schema(name, TASKS[name]))
    assert OmegaConf.to_container(node) == {"_target_": target, "name": name, **fields}
    assert list(node.keys()) == ["_target_", "name", *fields]
    assert {k: type(node._get_node(k)).__name__ for k in node} == {k: NODE_TYPES[k] for k in node}
    assert get_class(target) is TASKS[name]


def test_every_registered_task_has_a_schema_of_its_fields():
    schemas = task_schemas()
    assert set(schemas) == set(TASKS)
    for name, cls in TASKS.items():
        node = OmegaConf.structured(schemas[name])
        assert node.name == name and get_class(node._target_) is cls
        assert list(node.keys())[2:] == [f.name for f in dataclasses.fields(cls) if f.init]
        built = cls(**{k: v for k, v in OmegaConf.to_container(node).items() if k not in ("_target_", "name")})
        assert built == cls()  # the schema's defaults are the class's


# ---- a toy task, registered here and nowhere else -------------------------------------------------------------
@dataclass(frozen=True)
class EchoPrevious:
    """Emit the previous token: inputs uniform in 0..vocab_size-1, target at position t > 0 is inputs[t-1]."""

    seq_len: int = 24
    vocab_size: int = 8
    lag: int = 1

    def __post_init__(self) -> None:
        check_positive("vocab_size", self.vocab_size)
        check_positive("lag", self.lag)
        self._check_seq_len(self.seq_len)

    def _check_seq_len(self, seq_len: int) -> None:
        check_positive("seq_len", seq_len)
        if seq_len <= self.lag:
            raise ValueError(f"seq_len must be > lag = {self.lag}, got {seq_len}")

    def sample(self, batch_size: int, seq_len: int | None = None, generator: torch.Generator | None = None) -> Batch:
        L = sample_length(self, batch_size, seq_len, generator)
        inputs = torch.randint(0, self.vocab_size, (batch_size, L), generator=generator, device=generator.device)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, self.lag:] = inputs[:, : L - self.lag]
        return Batch(inputs, targets)


TOY = "echo_previous"


@pytest.fixture
def toy_task(tmp_path):
    """EchoPrevious registered as `echo_previous`, and a conf/task/echo_previous.yaml on Hydra's search path."""
    register_task(TOY, EchoPrevious)
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / f"{TOY}.yaml").write_text(f"defaults:\n  - {TOY}_schema\nseq_len: 16\n")
    yield [f"task={TOY}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    del TASKS[TOY]
    ConfigStore.instance().repo["task"].pop(f"{TOY}_schema.yaml", None)


def test_a_new_task_gets_its_schema_without_editing_config(toy_task, tmp_path):
    cfg = compose_cfg([*toy_task, "task.lag=2", "model=transformer", "model.d_model=16", "model.n_layers=1",
                       "device=cpu", f"results_root={tmp_path / 'results'}"])
    assert OmegaConf.to_container(cfg.task) == {"_target_": f"{__name__}.EchoPrevious", "name": TOY, "seq_len": 16,
                                                "vocab_size": 8, "lag": 2}
    p = prepare(cfg)
    assert p.task == EchoPrevious(seq_len=16, vocab_size=8, lag=2)
    assert p.identity["task"] == OmegaConf.to_container(cfg.task)
    batch = p.task.sample(2, None, torch.Generator().manual_seed(0))
    assert torch.equal(batch.targets[:, 2:], batch.inputs[:, :-2])


@pytest.mark.parametrize("override, message", [
    ("task.lagg=2", "Key 'lagg' not in 'EchoPreviousConfig'"),  # typo
    ("task.n_data=4", "Key 'n_data' not in 'EchoPreviousConfig'"),  # another task's key
    ("task.lag=soon", "could not be converted to Integer"),  # wrong type
])
def test_a_new_task_rejects_bad_keys_naming_them(toy_task, override, message):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([*toy_task, override])
    assert "task." + override.split("=")[0].split(".")[1] in str(err.value.__cause__)
    assert message in str(err.value.__cause__)


def test_registry_refuses_a_taken_name_and_a_non_dataclass():
    with pytest.raises(ValueError, match="'induction' is taken by InductionHeads"):
        register_task("induction", EchoPrevious)
    with pytest.raises(ValueError, match="identifier"):
        register_task("echo-previous", EchoPrevious)
    with pytest.raises(TypeError, match="must be a dataclass"):
        task_schema("plain", type("Plain", (), {}))
    assert TASKS["induction"].__name__ == "InductionHeads"
