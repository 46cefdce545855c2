"""Selective copying and plain copying: layout, scoring, seeding, validation."""

import pytest
import torch

from ssmbench.tasks import IGNORE, TASKS, Batch, Copying, SelectiveCopying, Task


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def oracle(seq: list[int]) -> list[int]:
    """Reads the definition: the non-noise, non-marker tokens of the sequence, in order, are emitted one per
    marker (token 1)."""
    data = [t for t in seq if t not in (0, 1)]
    markers = [i for i, t in enumerate(seq) if t == 1]
    assert len(data) == len(markers)
    pred = [IGNORE] * len(seq)
    for i, d in zip(markers, data):
        pred[i] = d
    return pred


def test_shapes_dtypes_and_protocol():
    task = SelectiveCopying(seq_len=64, vocab_size=10, n_data=8)
    assert isinstance(task, Task)
    assert task.vocab_size == 10
    batch = task.sample(3, None, gen(0))
    assert isinstance(batch, Batch)
    for t in (batch.inputs, batch.targets):
        assert t.shape == (3, 64) and t.dtype == torch.long and t.device == torch.device("cpu")
    assert batch.scored.sum().item() == 3 * 8


def test_seeded_determinism():
    task = SelectiveCopying(seq_len=64, n_data=8)
    a, b, c = (task.sample(4, None, gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_global_rng_ignored_and_untouched():
    task = SelectiveCopying(seq_len=64, n_data=8)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = task.sample(4, None, gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)
    b = task.sample(4, None, gen(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_generator_required():
    with pytest.raises(TypeError, match="Generator"):
        SelectiveCopying().sample(2, None, None)


@pytest.mark.parametrize("cls", [SelectiveCopying, Copying])
@pytest.mark.parametrize("seq_len,n_data,vocab", [(256, 16, 16), (32, 16, 16), (40, 5, 3), (100, 1, 7)])
def test_layout_targets_and_oracle(cls, seq_len, n_data, vocab):
    task = cls(seq_len=seq_len, vocab_size=vocab, n_data=n_data)
    batch = task.sample(8, None, gen(0))
    context = seq_len - n_data
    for seq, tgt in zip(batch.inputs.tolist(), batch.targets.tolist()):
        # Context: noise or data; then exactly n_data markers.
        assert all(t == 0 or 2 <= t < vocab for t in seq[:context])
        assert seq[context:] == [1] * n_data
        data_pos = [i for i, t in enumerate(seq[:context]) if t != 0]
        assert len(data_pos) == n_data
        # Scored exactly at the markers, with the context's data in order of position.
        assert [i for i, t in enumerate(tgt) if t != IGNORE] == list(range(context, seq_len))
        assert tgt[context:] == [seq[i] for i in data_pos]
        # The oracle that reads the definition scores 100%, and so does the class's own solver.
        assert oracle(seq) == tgt
    assert torch.equal(task.solve(batch.inputs), batch.targets)


def test_plain_copying_puts_data_at_front():
    for task in (Copying(seq_len=50, n_data=6), SelectiveCopying(seq_len=50, n_data=6, selective=False)):
        assert task.selective is False
        x = task.sample(16, None, gen(1)).inputs
        assert (x[:, :6] >= 2).all()
        assert (x[:, 6:44] == 0).all()
        assert (x[:, 44:] == 1).all()


def test_selective_positions_are_random_and_spread():
    task = SelectiveCopying(seq_len=132, n_data=4)
    x = task.sample(64, None, gen(2)).inputs[:, :128]
    pos = (x != 0).nonzero()[:, 1]
    assert pos.numel() == 64 * 4
    # Uniform over the context: positions reach both halves, and layouts differ between sequences.
    assert (pos < 64).any() and (pos >= 64).any()
    assert len({tuple(row.nonzero().flatten().tolist()) for row in x}) > 60


def test_data_values_cover_vocab():
    x = SelectiveCopying(seq_len=64, vocab_size=6, n_data=16).sample(16, None, gen(3)).inputs
    assert set(x[:, :48][x[:, :48] != 0].unique().tolist()) == {2, 3, 4, 5}


def test_other_seq_len():
    task = SelectiveCopying(seq_len=64, n_data=8)
    for L in (16, 300):
        batch = task.sample(2, L, gen(0))
        assert batch.inputs.shape == (2, L)
        assert batch.scored.sum().item() == 2 * 8
        assert torch.equal(task.solve(batch.inputs), batch.targets)
    with pytest.raises(ValueError, match=r"seq_len must be >= 2 \* n_data = 16"):
        task.sample(2, 15, gen(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seq_len=0), "seq_len must be > 0"),
        (dict(n_data=0), "n_data must be > 0"),
        (dict(n_data=-3), "n_data must be > 0"),
        (dict(vocab_size=0), "vocab_size must be > 0"),
        (dict(vocab_size=2), "vocab_size must be >= 3"),
        (dict(seq_len=2.5), "seq_len must be an integer"),
        (dict(seq_len=20, n_data=16), r"seq_len must be >= 2 \* n_data = 32 .* got 20"),
        (dict(selective="yes"), "selective must be a bool"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelectiveCopying(**kwargs)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        SelectiveCopying().sample(0, None, gen(0))


def test_registry():
    assert TASKS["selective_copy"] is SelectiveCopying
    assert TASKS["copy"] is Copying and TASKS["copy"]().selective is False


@pytest.mark.gpu
def test_on_generator_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    task = SelectiveCopying()
    batch = task.sample(4, None, torch.Generator("cuda").manual_seed(0))
    assert batch.inputs.is_cuda and batch.targets.is_cuda
    assert torch.equal(task.solve(batch.inputs), batch.targets)
