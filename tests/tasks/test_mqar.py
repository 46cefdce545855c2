"""Multi-query associative recall: layout, scoring, seeding, validation."""

import pytest
import torch

from ssmbench.tasks import IGNORE, TASKS, Batch, MultiQueryAR, Task


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def oracle(seq: list[int], n_pairs: int) -> list[int]:
    """Reads the definition: learn the pairs from the first 2*n_pairs tokens; at each later non-noise token
    (a query), emit the value of that key."""
    pairs = dict(zip(seq[0 : 2 * n_pairs : 2], seq[1 : 2 * n_pairs : 2]))
    pred = [IGNORE] * len(seq)
    for i in range(2 * n_pairs, len(seq)):
        if seq[i] != 0:
            pred[i] = pairs[seq[i]]
    return pred


def check_batch(task: MultiQueryAR, batch: Batch) -> None:
    n, K, V = task.n_pairs, task.n_keys, task.vocab_size
    L = batch.inputs.shape[1]
    for seq, tgt in zip(batch.inputs.tolist(), batch.targets.tolist()):
        keys, values = seq[0 : 2 * n : 2], seq[1 : 2 * n : 2]
        assert all(1 <= k <= K for k in keys) and len(set(keys)) == n
        assert all(K < v < V for v in values) and len(set(values)) == n
        queries = [(i, t) for i, t in enumerate(seq[2 * n :], start=2 * n) if t != 0]
        # Each key queried exactly once in the query region; noise elsewhere there.
        assert sorted(t for _, t in queries) == sorted(keys)
        # Scored exactly at the queries, with the paired value; the pair region is unscored.
        assert [i for i, t in enumerate(tgt) if t != IGNORE] == [i for i, _ in queries]
        pairs = dict(zip(keys, values))
        assert all(tgt[i] == pairs[k] for i, k in queries)
        assert oracle(seq, n) == tgt
    assert batch.scored.sum().item() == batch.inputs.shape[0] * n
    assert torch.equal(task.solve(batch.inputs), batch.targets)
    assert L == batch.targets.shape[1]


def test_shapes_dtypes_and_protocol():
    task = MultiQueryAR()
    assert (task.seq_len, task.vocab_size, task.n_pairs, task.n_keys) == (256, 256, 16, 127)
    assert isinstance(task, Task)
    batch = task.sample(3, None, gen(0))
    for t in (batch.inputs, batch.targets):
        assert t.shape == (3, 256) and t.dtype == torch.long


def test_seeded_determinism():
    task = MultiQueryAR(seq_len=64, vocab_size=64, n_pairs=8)
    a, b, c = (task.sample(4, None, gen(s)) for s in (7, 7, 8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs, c.inputs)


def test_global_rng_ignored_and_untouched():
    task = MultiQueryAR(seq_len=64, vocab_size=64, n_pairs=8)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = task.sample(4, None, gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(4321)
    b = task.sample(4, None, gen(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_generator_required():
    with pytest.raises(TypeError, match="Generator"):
        MultiQueryAR().sample(2, None, None)


@pytest.mark.parametrize(
    "seq_len,vocab,n_pairs", [(256, 256, 16), (8, 5, 2), (8, 6, 2), (64, 33, 16), (100, 8192, 4), (40, 30, 1)]
)
def test_layout_targets_and_oracle(seq_len, vocab, n_pairs):
    task = MultiQueryAR(seq_len=seq_len, vocab_size=vocab, n_pairs=n_pairs)
    check_batch(task, task.sample(8, None, gen(0)))


def test_query_positions_and_order_are_random():
    task = MultiQueryAR(seq_len=40, vocab_size=64, n_pairs=2)
    x = task.sample(200, None, gen(1)).inputs
    region = x[:, 4:]
    pos = region.nonzero()[:, 1]
    assert set(pos.tolist()) == set(range(36))  # uniform over the whole query region
    first_query = region.gather(1, (region != 0).int().argmax(1, keepdim=True)).squeeze(1)
    asks_first_key_first = (first_query == x[:, 0]).float().mean().item()
    assert 0.3 < asks_first_key_first < 0.7  # keys queried in random order


def test_other_seq_len():
    task = MultiQueryAR(seq_len=64, vocab_size=64, n_pairs=8)
    check_batch(task, task.sample(2, 512, gen(0)))
    check_batch(task, task.sample(2, 32, gen(0)))
    with pytest.raises(ValueError, match=r"seq_len must be >= 4 \* n_pairs = 32"):
        task.sample(2, 31, gen(0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seq_len=0), "seq_len must be > 0"),
        (dict(n_pairs=0), "n_pairs must be > 0"),
        (dict(vocab_size=0), "vocab_size must be > 0"),
        (dict(vocab_size=32, n_pairs=16), r"vocab_size must be >= 2 \* n_pairs \+ 1 = 33 .* got 32"),
        (dict(seq_len=63, n_pairs=16), r"seq_len must be >= 4 \* n_pairs = 64 .* got 63"),
        (dict(n_pairs=1.0), "n_pairs must be an integer"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiQueryAR(**kwargs)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        MultiQueryAR().sample(-1, None, gen(0))


def test_registry():
    assert TASKS["mqar"] is MultiQueryAR
