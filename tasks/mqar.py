"""Multi-query associative recall (MQAR), after the Zoology benchmark (Arora et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, check_positive, sample_length

NOISE = 0


@dataclass(frozen=True)
class MultiQueryAR:
    """Read ``n_pairs`` key-value pairs; later, at each key's query, emit its value.

    Token ids (``vocab_size`` counts them all), with ``K = (vocab_size - 1) // 2``:

    * ``0``: noise / pad
    * ``1 .. K``: keys
    * ``K+1 .. vocab_size-1``: values

    Layout of one sequence of length ``L``:

    * positions ``0 .. 2*n_pairs-1``: the pairs ``k_1 v_1 k_2 v_2 ...``. The keys are distinct, drawn uniformly
      without replacement; the values are distinct too, as in Zoology's generator.
    * positions ``2*n_pairs .. L-1`` (the query region): each of the ``n_pairs`` keys appears exactly once, at
      distinct positions drawn **uniformly** at random over the region (Zoology draws the gaps from a power
      law that favours short distances; this generator does not), the keys in a uniformly random order;
      noise everywhere else. Values never appear in the query region.

    Scored: only the ``n_pairs`` query positions, whose target is the value paired with the key there (the
    model emits the value while it reads the key: Zoology's next-token label, shifted onto the query);
    every other target is IGNORE, the pair region included. Each sequence has exactly ``n_pairs`` scored
    positions.

    Example (vocab_size=21, so K=10: keys 1..10, values 11..20; n_pairs=2, L=8; ``-`` is IGNORE)::

        position   0  1  2  3 |  4  5  6  7
        inputs     4 17  9 12 |  0  9  0  4
        targets    -  -  -  - |  -  12 -  17

    Constraints: ``vocab_size >= 2 * n_pairs + 1`` (n_pairs distinct keys and values) and
    ``seq_len >= 4 * n_pairs`` (the query region is at least twice the number of queries, as in Zoology).
    ``sample`` accepts another ``seq_len`` under the same constraint; ``n_pairs`` stays fixed.
    """

    seq_len: int = 256
    vocab_size: int = 256
    n_pairs: int = 16

    def __post_init__(self) -> None:
        check_positive("n_pairs", self.n_pairs)
        check_positive("vocab_size", self.vocab_size)
        if self.vocab_size < 2 * self.n_pairs + 1:
            raise ValueError(
                f"vocab_size must be >= 2 * n_pairs + 1 = {2 * self.n_pairs + 1} (noise 0, then {self.n_pairs} "
                f"distinct keys and {self.n_pairs} distinct values), got {self.vocab_size}"
            )
        self._check_seq_len(self.seq_len)

    @property
    def n_keys(self) -> int:
        """K: keys are 1..K, values K+1..vocab_size-1."""
        return (self.vocab_size - 1) // 2

    def _check_seq_len(self, seq_len: int) -> None:
        check_positive("seq_len", seq_len)
        if seq_len < 4 * self.n_pairs:
            raise ValueError(
                f"seq_len must be >= 4 * n_pairs = {4 * self.n_pairs} ({2 * self.n_pairs} pair tokens, then a "
                f"query region of at least {2 * self.n_pairs} positions for {self.n_pairs} queries), got {seq_len}"
            )

    def sample(self, batch_size: int, seq_len: int | None = None, generator: torch.Generator | None = None) -> Batch:
        L = sample_length(self, batch_size, seq_len, generator)
        B, n, K, device = batch_size, self.n_pairs, self.n_keys, generator.device
        n_values = self.vocab_size - 1 - K
        context = 2 * n

        # Sampling without replacement: the indices of the top-n of iid uniforms. topk orders them by score, not
        # by index, so they come out as a uniformly random ordered sample.
        def choose(population: int) -> torch.Tensor:
            scores = torch.rand(B, population, generator=generator, device=device)
            return scores.topk(n, dim=1).indices

        keys = choose(K) + 1
        values = choose(n_values) + K + 1
        query_at = choose(L - context) + context  # query i asks for keys[:, i]

        inputs = torch.full((B, L), NOISE, dtype=torch.long, device=device)
        inputs[:, 0:context:2] = keys
        inputs[:, 1:context:2] = values
        inputs.scatter_(1, query_at, keys)
        targets = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        targets.scatter_(1, query_at, values)
        return Batch(inputs, targets)

    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """The perfect answer, read off the inputs: Long[B, L] with the paired value at every query, IGNORE
        elsewhere."""
        B, L = inputs.shape
        context = 2 * self.n_pairs
        lookup = torch.full((B, self.n_keys + 1), IGNORE, dtype=torch.long, device=inputs.device)
        lookup.scatter_(1, inputs[:, 0:context:2], inputs[:, 1:context:2])  # lookup[0] (noise) stays IGNORE
        out = torch.full_like(inputs, IGNORE)
        out[:, context:] = lookup.gather(1, inputs[:, context:])
        return out
