"""Induction heads: layout, scoring, seeding, validation, other lengths."""

import pytest
import torch

from ssmbench.tasks import IGNORE, TASKS, Batch, InductionHeads, Task


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def oracle(seq: list[int], trigger: int) -> list[int]:
    """Reads the definition: at the last position, emit the token that followed the first trigger."""
    first = seq.index(trigger)
    return [IGNORE] * (len(seq) - 1) + [seq[first + 1]]


def check_batch(task: InductionHeads, batch: Batch) -> None:
    trigger = task.vocab_size - 1
    L = batch.inputs.shape[1]
    for seq, tgt in zip(batch.inputs.tolist(), batch.targets.tolist()):
        assert all(0 <= t < task.vocab_size for t in seq)
        where = [i for i, t in enumerate(seq) if t == trigger]
        assert len(where) == 2 and where[1] == L - 1 and 0 <= where[0] <= L - 3
        assert tgt[:-1] == [IGNORE] * (L - 1)
        assert tgt[-1] == seq[where[0] + 1] != trigger
        assert oracle(seq, trigger) == tgt
    assert torch.equal(task.solve(batch.inputs), batch.targets)


def test_shapes_dtypes_and_protocol():
    task = InductionHeads(seq_len=32, vocab_size=8)
    assert isinstance(task, Task) and task.vocab_size == 8 and task.trigger == 7
    batch = task.sample(3, None, gen(0))
    for t in (batch.inputs, batch.targets):
        assert t.shape == (3, 32) and t.dtype == torch.long
    assert batch.scored.sum().item() == 3
    assert batch.scored[:, -1].all()


def test_seeded_determinism():
    task = InductionHeads(seq_len=64)
    a, b, c = (task.sample(4, None, gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_global_rng_ignored_and_untouched():
    task = InductionHeads(seq_len=64)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = task.sample(4, None, gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = task.sample(4, None, gen(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_generator_required():
    with pytest.raises(TypeError, match="Generator"):
        InductionHeads().sample(2, None, None)


@pytest.mark.parametrize("seq_len,vocab", [(256, 16), (4, 3), (5, 3), (20, 100)])
def test_layout_targets_and_oracle(seq_len, vocab):
    task = InductionHeads(seq_len=seq_len, vocab_size=vocab)
    check_batch(task, task.sample(16, None, gen(0)))


def test_trigger_position_covers_its_range():
    task = InductionHeads(seq_len=6, vocab_size=4)
    x = task.sample(400, None, gen(4)).inputs
    first = (x == 3).int().argmax(dim=1)
    assert set(first.tolist()) == {0, 1, 2, 3}  # [0, L-3]
    assert set(x[x != 3].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("L", [64, 4096])
def test_other_lengths(L):
    task = InductionHeads(seq_len=256)
    batch = task.sample(4, L, gen(5))
    assert batch.inputs.shape == (4, L)
    check_batch(task, batch)


def test_very_long_sequence():
    task = InductionHeads()
    L = 2**20
    batch = task.sample(1, L, gen(6))
    x = batch.inputs
    assert x.shape == (1, L)
    assert (x == task.trigger).sum().item() == 2 and x[0, -1] == task.trigger
    assert batch.scored.sum().item() == 1
    assert torch.equal(task.solve(x), batch.targets)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seq_len=0), "seq_len must be > 0"),
        (dict(seq_len=3), "seq_len must be >= 4"),
        (dict(vocab_size=-1), "vocab_size must be > 0"),
        (dict(vocab_size=2), "vocab_size must be >= 3"),
        (dict(vocab_size=True), "vocab_size must be an integer"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InductionHeads(**kwargs)


def test_bad_sample_arguments():
    task = InductionHeads()
    with pytest.raises(ValueError, match="seq_len must be >= 4"):
        task.sample(2, 3, gen(0))
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        task.sample(0, None, gen(0))


def test_registry():
    assert TASKS["induction"] is InductionHeads
