"""TemporalUnet: the diffusion model's denoiser over whole trajectories (docs/paper_and_original.md §3.2).

A 1D UNet over the time axis with the trajectory dims as channels. Down levels are ResBlock, ResBlock, [attention],
Downsample (none at the last level), each level's output pushed as a skip before downsampling; the middle is ResBlock,
[attention], ResBlock; the up path has one level fewer and every up level upsamples, so the highest-resolution skip
is never used (as in the original). Attribute names match the original state dict (docs/paper_and_original.md §3.4).
"""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from diffuser.models.layers import (
    Conv1dBlock,
    Downsample1d,
    ResidualTemporalBlock,
    Upsample1d,
    attention_block,
    expand_time,
    time_mlp,
)


def horizon_multiple(dim_mults: Sequence[int]) -> int:
    """Horizons the UNet accepts are multiples of this: 2 ** (number of downsampling levels)."""
    return 2 ** (len(dim_mults) - 1)


def check_horizon(horizon: int, dim_mults: Sequence[int]) -> None:
    """Raise ValueError unless the down/up path maps ``horizon`` back to itself."""
    multiple = horizon_multiple(dim_mults)
    if isinstance(horizon, bool) or not isinstance(horizon, Integral) or horizon < 1 or horizon % multiple:
        raise ValueError(
            f"TemporalUnet: horizon {horizon!r} is invalid for dim_mults {tuple(dim_mults)}: it must be a positive "
            f"multiple of 2**(len(dim_mults) - 1) = {multiple} (e.g. {multiple}, {2 * multiple}, {4 * multiple})"
        )


class TemporalUnet(nn.Module):
    """Noisy trajectory and diffusion step → trajectory-shaped prediction (x0 or noise)."""

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        attention: bool = False,
    ):
        super().__init__()
        dim_mults = tuple(dim_mults)
        if not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"TemporalUnet: dim_mults must be a non-empty sequence of positive ints, got {dim_mults}")
        if transition_dim < 1:
            raise ValueError(f"TemporalUnet: transition_dim must be positive, got {transition_dim}")
        check_horizon(horizon, dim_mults)
        self.horizon = horizon
        self.transition_dim = transition_dim
        self.dim_mults = dim_mults

        dims = [transition_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        n_levels = len(in_out)

        self.time_mlp = time_mlp(dim)

        self.downs = nn.ModuleList()
        for i, (dim_in, dim_out) in enumerate(in_out):
            is_last = i == n_levels - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(dim_in, dim_out, embed_dim=dim),
                        ResidualTemporalBlock(dim_out, dim_out, embed_dim=dim),
                        attention_block(dim_out) if attention else nn.Identity(),
                        Downsample1d(dim_out) if not is_last else nn.Identity(),
                    ]
                )
            )

        mid_dim = dims[-1]
        self.mid_block1 = ResidualTemporalBlock(mid_dim, mid_dim, embed_dim=dim)
        self.mid_attn = attention_block(mid_dim) if attention else nn.Identity()
        self.mid_block2 = ResidualTemporalBlock(mid_dim, mid_dim, embed_dim=dim)

        # One level fewer than the down path (the first pair is skipped), and every up level upsamples.
        self.ups = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        ResidualTemporalBlock(dim_out * 2, dim_in, embed_dim=dim),
                        ResidualTemporalBlock(dim_in, dim_in, embed_dim=dim),
                        attention_block(dim_in) if attention else nn.Identity(),
                        Upsample1d(dim_in),
                    ]
                )
            )

        self.final_conv = nn.Sequential(Conv1dBlock(dim, dim, kernel_size=5), nn.Conv1d(dim, transition_dim, 1))

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Denoise a batch of trajectories; any horizon that is a multiple of ``horizon_multiple`` works.

        x: (B, H, transition_dim), t: (B,) or scalar → (B, H, transition_dim)
        """
        if x.dim() != 3 or x.shape[-1] != self.transition_dim:
            raise ValueError(f"TemporalUnet: expected x of shape (B, H, {self.transition_dim}), got {tuple(x.shape)}")
        if x.shape[1] < 1 or x.shape[1] % horizon_multiple(self.dim_mults):
            check_horizon(x.shape[1], self.dim_mults)

        emb = self.time_mlp(expand_time(t, x.shape[0], x.device))
        x = rearrange(x, "b h d -> b d h")

        skips = []
        for resnet, resnet2, attn, downsample in self.downs:
            x = resnet(x, emb)
            x = resnet2(x, emb)
            x = attn(x)
            skips.append(x)
            x = downsample(x)

        x = self.mid_block1(x, emb)
        x = self.mid_attn(x)
        x = self.mid_block2(x, emb)

        for resnet, resnet2, attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = resnet(x, emb)
            x = resnet2(x, emb)
            x = attn(x)
            x = upsample(x)

        x = self.final_conv(x)
        return rearrange(x, "b d h -> b h d")
