"""Induction heads (H3 / Mamba paper synthetics): recall the token that followed the trigger."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, check_positive, sample_length

MIN_SEQ_LEN = 4


@dataclass(frozen=True)
class InductionHeads:
    """See the trigger, remember the token after it; at the trigger's second (final) appearance, emit that token.

    Token ids (``vocab_size`` counts them all, the trigger included):

    * ``vocab_size - 1``: the trigger (the special token)
    * ``0 .. vocab_size-2``: ordinary tokens, drawn uniformly and independently at every other position

    Layout of one sequence of length ``L``:

    * a position ``p`` uniform in ``[0, L-3]`` holds the trigger, and ``p + 1`` holds the answer ``v``, a uniform
      ordinary token (so ``p + 1 <= L - 2`` and the answer never overlaps the final trigger);
    * position ``L - 1`` (the last) holds the trigger again;
    * every other position holds a uniform ordinary token. The trigger appears exactly twice, at ``p`` and
      ``L - 1``; ordinary tokens (``v`` included) may repeat anywhere.

    Scored: only the last position, whose target is ``v``; every other target is IGNORE. Each sequence has
    exactly one scored position.

    Example (vocab_size=16, so the trigger is 15; L=8, p=1, v=9; ``-`` is IGNORE)::

        position   0  1  2  3  4  5  6  7
        inputs     3 15  9  0 12  3  9 15
        targets    -  -  -  -  -  -  -  9

    Any ``seq_len >= 4`` can be sampled (the configured one is the training length; pass another to ``sample``
    to test extrapolation). Generation is O(B * L) with scatters, so it stays cheap at L = 2**20.
    """

    seq_len: int = 256
    vocab_size: int = 16

    def __post_init__(self) -> None:
        check_positive("vocab_size", self.vocab_size)
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (the trigger plus at least two ordinary tokens), got {self.vocab_size}"
            )
        _check_seq_len(self.seq_len)

    def _check_seq_len(self, seq_len: int) -> None:
        _check_seq_len(seq_len)

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    def sample(self, batch_size: int, seq_len: int | None = None, generator: torch.Generator | None = None) -> Batch:
        L = sample_length(self, batch_size, seq_len, generator)
        B, device = batch_size, generator.device

        # Ordinary tokens only (high bound excludes the trigger), so the trigger appears nowhere but where we put it.
        inputs = torch.randint(0, self.trigger, (B, L), generator=generator, device=device)
        p = torch.randint(0, L - 2, (B, 1), generator=generator, device=device)  # [0, L-3]
        answer = torch.randint(0, self.trigger, (B, 1), generator=generator, device=device)
        inputs.scatter_(1, p, self.trigger)
        inputs.scatter_(1, p + 1, answer)
        inputs[:, -1] = self.trigger

        targets = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        targets[:, -1:] = answer
        return Batch(inputs, targets)

    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """The perfect answer, read off the inputs: Long[B, L], the token after the first trigger at the last
        position, IGNORE elsewhere."""
        first = (inputs == self.trigger).to(torch.int8).argmax(dim=1, keepdim=True)  # argmax: first maximum
        out = torch.full_like(inputs, IGNORE)
        out[:, -1:] = inputs.gather(1, first + 1)
        return out


def _check_seq_len(seq_len: int) -> None:
    check_positive("seq_len", seq_len)
    if seq_len < MIN_SEQ_LEN:
        raise ValueError(
            f"seq_len must be >= {MIN_SEQ_LEN} (trigger, answer, at least one ordinary token, final trigger), "
            f"got {seq_len}"
        )
