"""The Task protocol and the Batch type every generator returns.

A task is a seeded, vectorised generator of (inputs, targets) pairs. It draws every random number from the
torch.Generator it is handed (never the global RNG), so the same generator state gives the same batch on the
same device, and it is cheap enough to sample fresh data at every training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

# Targets hold IGNORE wherever a position is not scored; F.cross_entropy(ignore_index=IGNORE) skips them and
# accuracy counts only the other positions.
IGNORE = -100


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # Long[B, L]: token ids fed to the model
    targets: torch.Tensor  # Long[B, L]: the token the model must emit at each position, IGNORE if unscored

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True))

    @property
    def scored(self) -> torch.Tensor:
        """Bool[B, L]: the positions that count for loss and accuracy."""
        return self.targets != IGNORE


@runtime_checkable
class Task(Protocol):
    vocab_size: int  # number of distinct input/target token ids, specials included

    def sample(self, batch_size: int, seq_len: int | None, generator: torch.Generator) -> Batch:
        """Draw a batch. seq_len=None uses the task's configured length; a task that generalises to other
        lengths (induction heads, for one) accepts any length for evaluation."""
        ...


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def sample_length(task, batch_size: int, seq_len: int | None, generator: torch.Generator | None) -> int:
    """The checks every `sample` starts with; returns the length to draw (the task's own when seq_len is None)."""
    if generator is None:
        raise TypeError("sample() needs a torch.Generator: tasks never draw from the global RNG")
    check_positive("batch_size", batch_size)
    L = task.seq_len if seq_len is None else seq_len
    task._check_seq_len(L)
    return L


def generator_device(generator: torch.Generator) -> torch.device:
    return torch.device(generator.device)
