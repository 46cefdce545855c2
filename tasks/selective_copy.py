"""Selective copying (Mamba paper, section 3.1 / appendix E.1) and its plain-copying baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, check_positive, sample_length

NOISE = 0  # filler token of the context
MARKER = 1  # "now copy": one per data token, after the context
FIRST_DATA = 2  # data tokens are drawn uniformly from FIRST_DATA .. vocab_size - 1


@dataclass(frozen=True)
class SelectiveCopying:
    """Remember the data tokens scattered through a noisy context; emit them, in order, at the markers.

    Token ids (``vocab_size`` counts them all, specials included, as in the paper's "vocab 16 including the
    noise token"):

    * ``0``: noise, the filler of the context
    * ``1``: marker, "now copy"; ``n_data`` of them end every sequence
    * ``2 .. vocab_size-1``: data, drawn uniformly and independently (repeats allowed)

    Layout of one sequence of length ``L = seq_len``; the context is its first ``C = L - n_data`` positions:

    * positions ``0 .. C-1`` (context): ``n_data`` data tokens at distinct positions drawn uniformly at random
      (``selective=True``), or at positions ``0 .. n_data-1`` (``selective=False``: plain copying, fixed
      spacing); noise everywhere else. The data order is the order of position.
    * positions ``C .. L-1``: ``n_data`` markers.

    Scored: only the ``n_data`` marker positions. The target at the i-th marker (position ``C + i``) is the
    i-th data token of the context, so the model emits the data while it reads the markers; every other
    target is IGNORE. Each sequence has exactly ``n_data`` scored positions.

    Example (seq_len=12, n_data=4, selective; ``-`` is IGNORE)::

        position   0  1  2  3  4  5  6  7 |  8  9 10 11
        inputs     0  7  0  0  3  0  9  5 |  1  1  1  1
        targets    -  -  -  -  -  -  -  - |  7  3  9  5

    With ``selective=False`` the same data would read ``inputs = 7 3 9 5 0 0 0 0 1 1 1 1``.

    ``sample`` accepts another ``seq_len`` (same constraint: ``seq_len >= 2 * n_data``); ``n_data`` stays fixed.
    """

    seq_len: int = 256
    vocab_size: int = 16
    n_data: int = 16
    selective: bool = True

    def __post_init__(self) -> None:
        check_positive("n_data", self.n_data)
        check_positive("vocab_size", self.vocab_size)
        if self.vocab_size < 3:
            raise ValueError(
                f"vocab_size must be >= 3 (noise 0, marker 1 and at least one data value), got {self.vocab_size}"
            )
        if not isinstance(self.selective, bool):
            raise ValueError(f"selective must be a bool, got {self.selective!r}")
        self._check_seq_len(self.seq_len)

    def _check_seq_len(self, seq_len: int) -> None:
        check_positive("seq_len", seq_len)
        if seq_len < 2 * self.n_data:
            raise ValueError(
                f"seq_len must be >= 2 * n_data = {2 * self.n_data} (the context holds {self.n_data} data "
                f"tokens and {self.n_data} markers follow), got {seq_len}"
            )

    def sample(self, batch_size: int, seq_len: int | None = None, generator: torch.Generator | None = None) -> Batch:
        L = sample_length(self, batch_size, seq_len, generator)
        B, n, device = batch_size, self.n_data, generator.device
        context = L - n

        if self.selective:
            # n distinct positions uniformly at random: the top-n of iid uniforms, then put in order.
            scores = torch.rand(B, context, generator=generator, device=device)
            positions = scores.topk(n, dim=1).indices.sort(dim=1).values
        else:
            positions = torch.arange(n, device=device).expand(B, n)
        data = torch.randint(FIRST_DATA, self.vocab_size, (B, n), generator=generator, device=device)

        inputs = torch.full((B, L), NOISE, dtype=torch.long, device=device)
        inputs.scatter_(1, positions, data)
        inputs[:, context:] = MARKER
        targets = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        targets[:, context:] = data
        return Batch(inputs, targets)

    def solve(self, inputs: torch.Tensor) -> torch.Tensor:
        """The perfect answer, read off the inputs: Long[B, L] with the targets at the markers, IGNORE elsewhere."""
        B, L = inputs.shape
        context = L - self.n_data
        is_data = inputs[:, :context] >= FIRST_DATA
        # A stable sort of "not data" brings the data positions to the front, still in order of position.
        order = torch.sort((~is_data).to(torch.int8), dim=1, stable=True).indices[:, : self.n_data]
        out = torch.full_like(inputs, IGNORE)
        out[:, context:] = inputs.gather(1, order)
        return out


@dataclass(frozen=True)
class Copying(SelectiveCopying):
    """Plain copying: SelectiveCopying with ``selective=False``, so the data tokens fill the first ``n_data``
    positions of the context (fixed spacing) and noise fills the rest. Layout and scoring otherwise identical;
    see SelectiveCopying."""

    selective: bool = False
