"""Per-dimension normalizers whose statistics are module buffers, so they are saved inside the model's weights.

Each normalizer is built empty for a given ``dim``, fitted once on real (unpadded) data with :meth:`fit`, and maps
data to roughly [-1, 1] (Limits, SafeLimits, CDF) or to zero mean and unit variance (Gaussian). ``normalize`` and
``unnormalize`` take a ``dims`` slice so the observation part of a transition can be (un)normalized alone.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

ALL = slice(None)


class Normalizer(nn.Module):
    """Base class: identity. Subclasses register their statistics as float32 buffers of shape (dim,) or (K, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def fit(self, data: np.ndarray | torch.Tensor) -> "Normalizer":
        """Fit statistics on data (N, dim); returns self."""
        data = torch.as_tensor(np.asarray(data), dtype=torch.float64)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__}: expected data of shape (N, {self.dim}), got {tuple(data.shape)}")
        if data.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: cannot fit on an empty array")
        self._fit(data)
        return self

    def _fit(self, data: torch.Tensor) -> None:
        pass

    def normalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        """Raw → normalized, per dimension; x: (..., len(dims))."""
        return x

    def unnormalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        """Normalized → raw, per dimension; x: (..., len(dims))."""
        return x


class IdentityNormalizer(Normalizer):
    """No normalization."""


class GaussianNormalizer(Normalizer):
    """(x − mean) / std per dimension, std with ddof 0; constant dimensions get std 1 instead of a division by 0."""

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def _fit(self, data: torch.Tensor) -> None:
        std = data.std(dim=0, unbiased=False)
        self.mean.copy_(data.mean(dim=0))
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def normalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        return (x - self.mean[dims]) / self.std[dims]

    def unnormalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        return x * self.std[dims] + self.mean[dims]


class LimitsNormalizer(Normalizer):
    """2 (x − min) / (max − min) − 1 per dimension; unnormalize clips inputs outside [−1, 1] by more than 1e-4."""

    clip_eps = 1e-4

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("mins", -torch.ones(dim))
        self.register_buffer("maxs", torch.ones(dim))

    def _fit(self, data: torch.Tensor) -> None:
        self.mins.copy_(data.min(dim=0).values)
        self.maxs.copy_(data.max(dim=0).values)

    def normalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        mins, maxs = self.mins[dims], self.maxs[dims]
        return 2 * (x - mins) / (maxs - mins) - 1

    def unnormalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        if x.numel() and (x.max() > 1 + self.clip_eps or x.min() < -1 - self.clip_eps):
            x = x.clamp(-1, 1)
        mins, maxs = self.mins[dims], self.maxs[dims]
        return (x + 1) / 2 * (maxs - mins) + mins


class SafeLimitsNormalizer(LimitsNormalizer):
    """Limits, with a constant dimension widened to [value − 1, value + 1] (only that dimension; see README)."""

    def _fit(self, data: torch.Tensor) -> None:
        super()._fit(data)
        constant = self.mins == self.maxs
        self.mins[constant] -= 1
        self.maxs[constant] += 1


class CDFNormalizer(Normalizer):
    """Per-dimension empirical CDF mapped to [−1, 1], stored as ``n_quantiles`` quantiles; inverse clips to range."""

    n_quantiles = 1001

    def __init__(self, dim: int):
        super().__init__(dim)
        self.register_buffer("quantiles", torch.linspace(-1, 1, self.n_quantiles).unsqueeze(1).repeat(1, dim))

    def _fit(self, data: torch.Tensor) -> None:
        probs = torch.linspace(0, 1, self.n_quantiles, dtype=torch.float64)
        self.quantiles.copy_(torch.quantile(data, probs, dim=0))

    def normalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        levels = torch.linspace(-1, 1, self.n_quantiles, device=x.device)
        return _interp(x, self.quantiles[:, dims], levels)

    def unnormalize(self, x: torch.Tensor, dims: slice = ALL) -> torch.Tensor:
        levels = torch.linspace(-1, 1, self.n_quantiles, device=x.device)
        return _interp(x.clamp(-1, 1), levels, self.quantiles[:, dims])


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation per last dimension, clamped at the ends.

    x: (..., D); xp, fp: (K, D) increasing along K (either may also be (K,), shared by all dimensions).
    """
    d = x.shape[-1]
    xp = (xp if xp.ndim == 2 else xp.unsqueeze(1)).expand(-1, d).T.contiguous()  # (D, K)
    fp = (fp if fp.ndim == 2 else fp.unsqueeze(1)).expand(-1, d).T.contiguous()
    flat = x.reshape(-1, d).T.contiguous()  # (D, N)
    hi = torch.searchsorted(xp, flat).clamp(1, xp.shape[1] - 1)
    lo = hi - 1
    x0, x1 = xp.gather(1, lo), xp.gather(1, hi)
    y0, y1 = fp.gather(1, lo), fp.gather(1, hi)
    w = ((flat - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0, 1)
    return (y0 + w * (y1 - y0)).T.reshape(x.shape)


def scalar_statistics(
    data: Mapping[str, np.ndarray], action_dim: int, observation_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' ValueGuidedRLPipeline normalization: ONE mean and std (ddof 0) over all of 'actions' and one over
    all of 'observations', repeated per dimension in our [actions, observations] layout: (D,), (D,)."""
    parts = [(np.asarray(data["actions"], np.float64), action_dim),
             (np.asarray(data["observations"], np.float64), observation_dim)]
    mean = torch.cat([torch.full((n,), float(x.mean())) for x, n in parts])
    std = torch.cat([torch.full((n,), float(x.std())) for x, n in parts])
    return mean, std


NORMALIZERS: dict[str, type[Normalizer]] = {
    "identity": IdentityNormalizer,
    "gaussian": GaussianNormalizer,
    "limits": LimitsNormalizer,
    "safe_limits": SafeLimitsNormalizer,
    "cdf": CDFNormalizer,
}


def make_normalizer(kind: str, dim: int) -> Normalizer:
    """Build an unfitted normalizer by name (one of NORMALIZERS)."""
    if kind not in NORMALIZERS:
        raise ValueError(f"unknown normalizer '{kind}'; valid: {sorted(NORMALIZERS)}")
    return NORMALIZERS[kind](dim)
