"""Recurrent layers: Elman (tanh), LSTM and GRU, through torch's cuDNN-backed modules.

These are the "RNNs forget" baseline: a fixed-size state updated at every step, with no way to skip input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import SequenceLayer

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

    def init_state(self, batch_size, device, dtype=torch.float32):
        h = torch.zeros(1, batch_size, self.hidden, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    def step(self, x_t, state):
        y, state = self.rnn(x_t[:, None], state)
        return self.proj(y[:, 0]), state
