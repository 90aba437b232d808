"""torch.compile for the trainer's loss and the planner's networks (``trainer.compile``, ``planner.compile``)."""

from __future__ import annotations

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compiled(module: nn.Module, mode: str, option: str) -> nn.Module:
    """``module`` compiled with torch.compile ``mode`` for fixed shapes (a new shape compiles again); ``option`` names
    the config key in the error for a mode that is not one of COMPILE_MODES. ``reduce-overhead`` replays CUDA graphs:
    a call's outputs are overwritten by the next call, so callers copy what they keep."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"{option}={mode!r} is not a torch.compile mode; valid: null (eager) or {list(COMPILE_MODES)}"
                         " (reduce-overhead: CUDA graphs, for GPUs)")
    return torch.compile(module, mode=None if mode == "default" else mode, dynamic=False)
