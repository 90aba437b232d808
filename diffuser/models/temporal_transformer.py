"""TemporalTransformer: a transformer denoiser over whole trajectories, an option beside the paper's TemporalUnet.

Not in the Diffuser paper. Blocks follow DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"):
pre-norm self-attention and MLP whose LayerNorms (no affine) are shifted and scaled, and whose outputs are gated,
by a projection of the diffusion-step embedding; the projections start at zero (adaLN-Zero), so every block starts
as the identity and the zero-initialized output layer makes the untrained network return exactly 0.

One token per trajectory step (a linear embedding of its [a, s] row) plus a sinusoidal position embedding, so one
network takes any horizon; conditioning stays inpainting, done outside the network by GaussianDiffusion.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffuser.models.layers import SinusoidalPosEmb, expand_time


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x·(1 + scale) + shift, one shift and scale per batch row.

    x: (B, H, W), shift, scale: (B, W) → (B, H, W)
    """
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention over the horizon (every step sees every step)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(width, 3 * width)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W) → (B, H, W)"""
        b, h, w = x.shape
        q, k, v = self.to_qkv(x).view(b, h, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H, W / heads)
        return self.to_out(out.transpose(1, 2).reshape(b, h, w))


class DiTBlock(nn.Module):
    """x + gate·attn(adaLN(x)), then x + gate·mlp(adaLN(x)); shift, scale and gate of both come from c."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * width, width)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)  # adaLN-Zero: gates 0, so the block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: (B, H, W), c: (B, W) → (B, H, W)"""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN (shift and scale from c) and a linear map from tokens back to [a, s] rows; all zero at init."""

    def __init__(self, width: int, transition_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, transition_dim)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: (B, H, W), c: (B, W) → (B, H, transition_dim)"""
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class TemporalTransformer(nn.Module):
    """Noisy trajectory and diffusion step → trajectory-shaped prediction (x0 or noise), with DiT blocks.

    horizon: the training horizon (kept for reference: any horizon ≥ 1 works, positions are sinusoidal).
    width: token width, split over ``heads``; depth: number of DiT blocks.
    """

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        width: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        for name, value in (("horizon", horizon), ("transition_dim", transition_dim), ("depth", depth),
                            ("heads", heads), ("mlp_ratio", mlp_ratio)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"TemporalTransformer: {name} must be a positive int, got {value!r}")
        if width % heads or width % 2 or width < 4:
            raise ValueError(f"TemporalTransformer: width {width} must be even, ≥ 4 and a multiple of heads {heads}")
        self.horizon = horizon
        self.transition_dim = transition_dim
        self.width = width

        self.embed = nn.Linear(transition_dim, width)
        self.positions = SinusoidalPosEmb(width)  # of the step index 0..H-1, added to the tokens
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.blocks = nn.ModuleList(DiTBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(width, transition_dim)

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Denoise a batch of trajectories of any horizon.

        x: (B, H, transition_dim), t: (B,) or scalar → (B, H, transition_dim)
        """
        if x.dim() != 3 or x.shape[-1] != self.transition_dim or x.shape[1] < 1:
            raise ValueError(
                f"TemporalTransformer: expected x of shape (B, H ≥ 1, {self.transition_dim}), got {tuple(x.shape)}"
            )
        c = self.time_mlp(expand_time(t, x.shape[0], x.device))  # (B, W)
        steps = torch.arange(x.shape[1], device=x.device)
        h = self.embed(x) + self.positions(steps)  # (B, H, W)
        for block in self.blocks:
            h = block(h, c)
        return self.final(h, c)
