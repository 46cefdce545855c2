"""Task generator benchmarks at the reproduction experiments' sizes (conf/experiment/*.yaml). They run on the
CPU at full size (generation is cheap); the same sizes on CUDA are marked gpu. `ssmbench-taskbench` puts these
times next to a training step's."""

from __future__ import annotations

import pytest
import torch

from ssmbench.tasks import Copying, InductionHeads, MultiQueryAR, SelectiveCopying

from .conftest import synced

CASES = {
    "selective_copy-table1": (SelectiveCopying(seq_len=4096, vocab_size=16, n_data=16), 64),
    "selective_copy-demo": (SelectiveCopying(seq_len=64, vocab_size=16, n_data=8), 32),
    "copy": (Copying(seq_len=4096, vocab_size=16, n_data=16), 64),
    "induction-train": (InductionHeads(seq_len=256, vocab_size=16), 8),
    "induction-eval-2^16": (InductionHeads(seq_len=256, vocab_size=16), 8),
    "mqar": (MultiQueryAR(seq_len=256, vocab_size=256, n_pairs=16), 32),
}
EVAL_LEN = {"induction-eval-2^16": 2 ** 16}


def _bench(benchmark, name, device):
    task, batch = CASES[name]
    gen = torch.Generator(device=device).manual_seed(0)
    L = EVAL_LEN.get(name)
    fn = synced(lambda: task.sample(batch, L, gen), device)
    fn()
    out = benchmark(fn)
    assert out.inputs.shape == (batch, L or task.seq_len)


@pytest.mark.parametrize("name", list(CASES))
def test_cpu(benchmark, name):
    _bench(benchmark, name, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_gpu(benchmark, name):
    _bench(benchmark, name, "cuda")
