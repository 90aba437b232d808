"""The MLP of the baselines, IQL's networks and inverse dynamics: ReLU hidden layers, a linear output."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, out_dim: int, hidden_dim: int, n_layers: int) -> nn.Sequential:
    """in_dim → n_layers × (Linear(hidden_dim), ReLU) → Linear(out_dim)."""
    layers, width = [], in_dim
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, out_dim))
