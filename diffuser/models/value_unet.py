"""ValueFunction: the return model used as the planning guide (docs/paper_and_original.md §3.3).

An encoder that downsamples at every level (ResBlock, ResBlock, Downsample), a bottleneck
ResBlock(top → top/2) → Downsample → ResBlock(top/2 → top/4) → Downsample, then an MLP head on the flattened
features concatenated with the time embedding. Attribute names are the original's (docs/paper_and_original.md §3.4).

Deviation from the original (its PR #56): the head's input size follows the real encoded length (each Downsample
maps L → ceil(L / 2)), so horizons of 64 and above work; for H ≤ 32 the sizes, and so the weights, are identical.
"""

from __future__ import annotations

from numbers import Integral
from typing import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from diffuser.models.layers import Downsample1d, Mish, ResidualTemporalBlock, attention_block, expand_time, time_mlp


def encoded_length(horizon: int, n_downsamples: int) -> int:
    """Sequence length after ``n_downsamples`` stride-2 convs (k 3, pad 1): L → floor((L - 1) / 2) + 1 each."""
    length = horizon
    for _ in range(n_downsamples):
        length = (length - 1) // 2 + 1
    return length


class ValueFunction(nn.Module):
    """Noisy trajectory and diffusion step → predicted return(s)."""

    def __init__(
        self,
        horizon: int,
        transition_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        attention: bool = False,
        out_dim: int = 1,
    ):
        super().__init__()
        dim_mults = tuple(dim_mults)
        if isinstance(horizon, bool) or not isinstance(horizon, Integral) or horizon < 1:
            raise ValueError(f"ValueFunction: horizon must be a positive int, got {horizon!r}")
        if not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"ValueFunction: dim_mults must be a non-empty sequence of positive ints, got {dim_mults}")
        if transition_dim < 1 or out_dim < 1:
            raise ValueError(
                f"ValueFunction: transition_dim and out_dim must be positive, got {transition_dim}, {out_dim}"
            )
        mid_dim = dim * dim_mults[-1]
        if mid_dim % 32:
            raise ValueError(
                f"ValueFunction: the bottleneck widths top/2 and top/4 need GroupNorm(8), so the top width "
                f"dim * dim_mults[-1] = {mid_dim} must be a multiple of 32"
            )
        self.horizon = horizon
        self.transition_dim = transition_dim

        dims = [transition_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))

        self.time_mlp = time_mlp(dim)

        # blocks.i = [ResBlock, ResBlock, Downsample(, attention)]. The optional attention (an extension; the
        # original has none here) runs before the Downsample but is stored last so `blocks.i.2` stays the Downsample.
        self.blocks = nn.ModuleList()
        for dim_in, dim_out in in_out:
            level = [
                ResidualTemporalBlock(dim_in, dim_out, embed_dim=dim),
                ResidualTemporalBlock(dim_out, dim_out, embed_dim=dim),
                Downsample1d(dim_out),
            ]
            if attention:
                level.append(attention_block(dim_out))
            self.blocks.append(nn.ModuleList(level))
        self.attention = attention

        mid_dim_2, mid_dim_3 = mid_dim // 2, mid_dim // 4
        self.mid_block1 = ResidualTemporalBlock(mid_dim, mid_dim_2, embed_dim=dim)
        self.mid_down1 = Downsample1d(mid_dim_2)
        self.mid_block2 = ResidualTemporalBlock(mid_dim_2, mid_dim_3, embed_dim=dim)
        self.mid_down2 = Downsample1d(mid_dim_3)

        fc_dim = mid_dim_3 * encoded_length(horizon, len(in_out) + 2)
        self.final_block = nn.Sequential(
            nn.Linear(fc_dim + dim, fc_dim // 2),
            Mish(),
            nn.Linear(fc_dim // 2, out_dim),
        )

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Predict values; the horizon must equal the one the head was built for.

        x: (B, H, transition_dim), t: (B,) or scalar → (B, out_dim)
        """
        if x.dim() != 3 or x.shape[-1] != self.transition_dim:
            raise ValueError(f"ValueFunction: expected x of shape (B, H, {self.transition_dim}), got {tuple(x.shape)}")
        if x.shape[1] != self.horizon:
            raise ValueError(
                f"ValueFunction: got horizon {x.shape[1]} but the model was built for horizon {self.horizon} "
                f"(the head's input size depends on it)"
            )

        emb = self.time_mlp(expand_time(t, x.shape[0], x.device))
        x = rearrange(x, "b h d -> b d h")

        for level in self.blocks:
            x = level[0](x, emb)
            x = level[1](x, emb)
            if self.attention:
                x = level[3](x)
            x = level[2](x)

        x = self.mid_down1(self.mid_block1(x, emb))
        x = self.mid_down2(self.mid_block2(x, emb))

        x = torch.cat((x.flatten(1), emb), dim=-1)
        return self.final_block(x)
