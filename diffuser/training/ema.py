"""Exponential moving average of a module's parameters (buffers are copied as they are)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """ema ← decay·ema + (1 − decay)·θ over parameters; ``copy_from`` makes a hard copy of everything."""

    def __init__(self, decay: float):
        self.decay = decay

    @torch.no_grad()
    def copy_from(self, ema_model: nn.Module, model: nn.Module) -> None:
        """Hard copy of parameters and buffers."""
        ema_model.load_state_dict(model.state_dict())

    @torch.no_grad()
    def update(self, ema_model: nn.Module, model: nn.Module) -> None:
        """One averaging step over parameters (one foreach lerp)."""
        torch._foreach_lerp_(list(ema_model.parameters()), list(model.parameters()), 1.0 - self.decay)
