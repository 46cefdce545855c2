"""The contract every sequence layer (and every block built from one) follows.

    y = layer(x)                                   # x, y: [batch, L, d_model]; causal
    state = layer.init_state(batch_size, device)   # recurrent state (any nest of tensors; None if stateless)
    y_t, state = layer.step(x_t, state)            # x_t, y_t: [batch, d_model]; one token; agrees with forward()

Each layer also names the parameters that belong to the SSM (A, A_log, D, dt bias, S4's B/C/log_dt): they are
kept in fp32 and trained without weight decay, in their own optimizer group (see `ssm_parameter_names`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

State = Any

# Parameters whose attribute name is in this set, on any module, go to the "ssm" optimizer group: no weight
# decay, kept fp32 under autocast (autocast only casts activations; parameters stay in their own dtype).
SSM_PARAM_NAMES = frozenset({"A", "A_log", "A_real", "A_imag", "log_A_real", "D", "dt_bias", "log_dt",
                             "B", "C", "P", "Lambda_re", "Lambda_im", "inv_dt"})


class SequenceLayer(nn.Module):
    """Base class: subclasses implement forward, init_state and step."""

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> State:
        return None

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")


def ssm_parameter_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that belong to the SSM group (no weight decay, fp32)."""
    names = set()
    for full_name, _ in model.named_parameters():
        if full_name.rsplit(".", 1)[-1] in SSM_PARAM_NAMES or getattr(_, "_ssm_param", False):
            names.add(full_name)
    return names


def mark_ssm(param: nn.Parameter) -> nn.Parameter:
    """Tag a parameter with another name as an SSM parameter."""
    param._ssm_param = True
    return param
