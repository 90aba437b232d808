"""Building blocks of the temporal UNet and the value network (docs/paper_and_original.md §3.1).

Every module works channel-first, ``x: (B, C, L)``. Attribute names and ``nn.Sequential`` indices mirror the
original implementation so that its state dicts load key for key; ``nn.Identity`` fills the slots where the original
held a parameter-free module (einops ``Rearrange``), and such slots are skipped in ``forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def expand_time(t: Tensor | int, batch_size: int, device: torch.device) -> Tensor:
    """Broadcast diffusion steps to one per batch row.

    t: python int, 0-d tensor, (1,) or (B,) → (B,)
    """
    if not isinstance(t, Tensor):
        return torch.full((batch_size,), t, device=device, dtype=torch.long)
    if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1):
        return t.reshape(1).to(device).expand(batch_size)
    if t.dim() == 1 and t.shape[0] == batch_size:
        return t.to(device)
    raise ValueError(
        f"diffusion steps t must be an int, a 0-d tensor or of shape ({batch_size},); got {tuple(t.shape)}"
    )


class Mish(nn.Module):
    """Mish, x·tanh(softplus(x)), as ``nn.Mish``. On CPU it is composed from softplus and tanh: the fused CPU kernel
    of current torch builds is about 2× slower, forward and backward (a quarter of a UNet forward on 2 cores)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x) if x.is_cuda else x * torch.tanh(F.softplus(x))


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of the diffusion step, sin half first then cos half."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, got {dim}")
        self.dim = dim
        half_dim = dim // 2
        scale = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim) * -scale)
        # Not persistent: the original stores no such tensor, so state dicts keep the original keys.
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """Embed steps.

        t: (B,) → (B, dim)
        """
        args = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (same padding) → GroupNorm → Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        if out_channels % n_groups:
            raise ValueError(
                f"Conv1dBlock: GroupNorm({n_groups}) needs out_channels divisible by {n_groups}, got {out_channels}"
            )
        # Indices 1 and 3 held einops Rearrange layers in the original; keep them so the GroupNorm stays `block.2`.
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.Identity(),
            nn.GroupNorm(n_groups, out_channels),
            nn.Identity(),
            Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, L) → (B, C_out, L)"""
        conv, _, norm, _, act = self.block
        return act(norm(conv(x)))


class Downsample1d(nn.Module):
    """Strided conv (k 3, stride 2, pad 1): L → ceil(L / 2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, ceil(L / 2))"""
        return self.conv(x)


class Upsample1d(nn.Module):
    """Transposed conv (k 4, stride 2, pad 1): L → 2L."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, 2L)"""
        return self.conv(x)


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks with the time embedding added after the first, plus a (1×1 conv) residual."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int = 5):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size),
                Conv1dBlock(out_channels, out_channels, kernel_size),
            ]
        )
        # The original ends this Sequential with a Rearrange at index 2; nothing after it, so no placeholder needed.
        self.time_mlp = nn.Sequential(Mish(), nn.Linear(embed_dim, out_channels))
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x: (B, C_in, L), t: (B, embed_dim) → (B, C_out, L)"""
        out = self.blocks[0](x) + self.time_mlp(t).unsqueeze(-1)
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class LayerNorm(nn.Module):
    """Layer norm over the channel axis with learned gain and bias (eps 1e-5)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, L)"""
        var, mean = torch.var_mean(x, dim=1, correction=0, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.g + self.b


class PreNorm(nn.Module):
    """Channel LayerNorm, then the wrapped module."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, L)"""
        return self.fn(self.norm(x))


class LinearAttention(nn.Module):
    """Linear attention over time: keys softmaxed along L, 4 heads of 32 by default."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv1d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Conv1d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, L)"""
        q, k, v = rearrange(self.to_qkv(x), "b (qkv h c) n -> qkv b h c n", qkv=3, h=self.heads)
        q = q * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(rearrange(out, "b h c n -> b (h c) n"))


class Residual(nn.Module):
    """Adds the input back to the wrapped module's output."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, L) → (B, C, L)"""
        return self.fn(x) + x


def attention_block(dim: int) -> nn.Module:
    """Residual(PreNorm(LinearAttention)) at width ``dim``, as used after a level's ResBlocks."""
    return Residual(PreNorm(dim, LinearAttention(dim)))


def time_mlp(dim: int) -> nn.Sequential:
    """Step embedding: sinusoid(dim) → Linear(dim, 4·dim) → Mish → Linear(4·dim, dim); keys `1` and `3`."""
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))
