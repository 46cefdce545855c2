"""Recurrent layers: Elman (tanh), LSTM and GRU, through torch's cuDNN-backed modules.

These are the "RNNs forget" baseline: a fixed-size state updated at every step, with no way to skip input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import ALL_ROWS, SequenceLayer, device_dtype

CELLS = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNOptions:
    cell: str = "lstm"  # elman | lstm | gru
    hidden: int = 0  # state width; 0 means d_model


class RNNLayer(SequenceLayer):
    def __init__(self, d_model: int, cell: str = "lstm", hidden: int = 0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.layer.cell={cell!r} is not one of {sorted(CELLS)}")
        if hidden < 0:
            raise ValueError(f"model.layer.hidden must be >= 0 (0 means d_model), got {hidden}")
        self.cell = cell
        self.hidden = hidden or d_model
        kwargs = {"nonlinearity": "tanh"} if cell == "elman" else {}
        self.rnn = CELLS[cell](d_model, self.hidden, batch_first=True, **kwargs)
        self.proj = nn.Identity() if self.hidden == d_model else nn.Linear(self.hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.proj(y)

    def allocate_cache(self, batch, max_len, device=None, dtype=None):
        """h [1, batch, hidden] (torch's layout: the batch is the second axis), and (h, c) for an LSTM."""
        device, dtype = device_dtype(self, device, dtype)
        h = torch.zeros(1, batch, self.hidden, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def _store(self, cache, new, rows=ALL_ROWS) -> None:
        for c, n in zip(cache, new) if self.cell == "lstm" else [(cache, new)]:
            c[:, rows] = n

    def prefill(self, x, cache, rows: slice = ALL_ROWS):
        y, new = self.rnn(x)
        self._store(cache, new, rows)
        return self.proj(y)

    def step(self, x_t, cache):
        y, new = self.rnn(x_t[:, None], cache)
        self._store(cache, new)
        return self.proj(y[:, 0])
