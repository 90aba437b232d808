"""The original Diffuser networks and checkpoint files, rebuilt for the import tests (not part of the package).

Written from docs/paper_and_original.md §3-§7 and the original's attribute names, independently of diffuser.models:
einops ``Rearrange`` layers where the original has them (so the Sequential indices and thus the state-dict keys come
out as the original's), nn.Mish, the wrapper's 12 schedule buffers computed in numpy, and ``loss_fn.weights``.
``slots=3`` builds the maze2d branch's older TemporalUnet (no attention slot, no mid attention).
Also a hand-written table of diffusers' UNet1DModel key names, for a diffusers-free test of that mapping.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from einops.layers.torch import Rearrange
from safetensors.torch import save_file
from torch import nn


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        args = t.float()[:, None] * freqs[None]
        return torch.cat((args.sin(), args.cos()), dim=-1)


def conv_block(cin, cout, k=5):
    """Conv1d → GroupNorm(8) → Mish, with the original's two Rearranges at indices 1 and 3."""
    return nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2), Rearrange("b c h -> b c 1 h"),
                         nn.GroupNorm(8, cout), Rearrange("b c 1 h -> b c h"), nn.Mish())


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        self.block = conv_block(cin, cout, k)

    def forward(self, x):
        return self.block(x)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, embed_dim):
        super().__init__()
        self.blocks = nn.ModuleList([ConvBlock(cin, cout), ConvBlock(cout, cout)])
        self.time_mlp = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, cout), Rearrange("b c -> b c 1"))
        self.residual_conv = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, t):
        out = self.blocks[1](self.blocks[0](x) + self.time_mlp(t))
        return out + self.residual_conv(x)


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv1d(c, c, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.ConvTranspose1d(c, c, 4, 2, 1)

    def forward(self, x):
        return self.conv(x)


class ChannelNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.g, self.b = nn.Parameter(torch.ones(1, c, 1)), nn.Parameter(torch.zeros(1, c, 1))

    def forward(self, x):
        var, mean = x.var(dim=1, unbiased=False, keepdim=True), x.mean(dim=1, keepdim=True)
        return (x - mean) / (var + 1e-5).sqrt() * self.g + self.b


class Attn(nn.Module):
    def __init__(self, c, heads=4, dim_head=32):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_qkv = nn.Conv1d(c, heads * dim_head * 3, 1, bias=False)
        self.to_out = nn.Conv1d(heads * dim_head, c, 1)

    def forward(self, x):
        b, _, n = x.shape
        q, k, v = (z.reshape(b, self.heads, -1, n) for z in self.to_qkv(x).chunk(3, dim=1))
        context = torch.einsum("bhdn,bhen->bhde", k.softmax(dim=-1), v)
        out = torch.einsum("bhde,bhdn->bhen", context, q * self.scale)
        return self.to_out(out.reshape(b, -1, n))


class PreNorm(nn.Module):
    def __init__(self, c, fn):
        super().__init__()
        self.fn, self.norm = fn, ChannelNorm(c)

    def forward(self, x):
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def time_mlp(dim):
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))


class OriginalTemporalUnet(nn.Module):
    """forward(x (B, H, D), cond, t) as the original; slots=3 is the maze2d branch's layout."""

    def __init__(self, transition_dim, dim=32, dim_mults=(1, 2, 4, 8), attention=False, slots=4):
        super().__init__()
        widths = [transition_dim] + [dim * m for m in dim_mults]
        pairs = list(zip(widths[:-1], widths[1:]))
        attn = (lambda c: Residual(PreNorm(c, Attn(c)))) if attention else (lambda c: nn.Identity())
        self.slots = slots
        self.time_mlp = time_mlp(dim)
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (a, b) in enumerate(pairs):
            level = [ResBlock(a, b, dim), ResBlock(b, b, dim)] + ([attn(b)] if slots == 4 else [])
            self.downs.append(nn.ModuleList(level + [Down(b) if i < len(pairs) - 1 else nn.Identity()]))
        self.mid_block1 = ResBlock(widths[-1], widths[-1], dim)
        if slots == 4:
            self.mid_attn = attn(widths[-1])
        self.mid_block2 = ResBlock(widths[-1], widths[-1], dim)
        for a, b in reversed(pairs[1:]):
            level = [ResBlock(2 * b, a, dim), ResBlock(a, a, dim)] + ([attn(a)] if slots == 4 else [])
            self.ups.append(nn.ModuleList(level + [Up(a)]))
        self.final_conv = nn.Sequential(ConvBlock(dim, dim), nn.Conv1d(dim, transition_dim, 1))

    def forward(self, x, cond, t):
        x, emb, skips = x.transpose(1, 2), self.time_mlp(t), []
        for level in self.downs:
            x = level[1](level[0](x, emb), emb)
            if self.slots == 4:
                x = level[2](x)
            skips.append(x)
            x = level[-1](x)
        x = self.mid_block1(x, emb)
        if self.slots == 4:
            x = self.mid_attn(x)
        x = self.mid_block2(x, emb)
        for level in self.ups:
            x = level[1](level[0](torch.cat((x, skips.pop()), dim=1), emb), emb)
            if self.slots == 4:
                x = level[2](x)
            x = level[-1](x)
        return self.final_conv(x).transpose(1, 2)


class OriginalValueFunction(nn.Module):
    """forward(x (B, H, D), cond, t) → (B, 1); the head sized from the horizon (H ≤ 32 as released)."""

    def __init__(self, horizon, transition_dim, dim=32, dim_mults=(1, 2, 4, 8)):
        super().__init__()
        widths = [transition_dim] + [dim * m for m in dim_mults]
        self.time_mlp = time_mlp(dim)
        self.blocks = nn.ModuleList(
            nn.ModuleList([ResBlock(a, b, dim), ResBlock(b, b, dim), Down(b)]) for a, b in zip(widths[:-1], widths[1:])
        )
        top = widths[-1]
        self.mid_block1, self.mid_down1 = ResBlock(top, top // 2, dim), Down(top // 2)
        self.mid_block2, self.mid_down2 = ResBlock(top // 2, top // 4, dim), Down(top // 4)
        length = horizon
        for _ in range(len(dim_mults) + 2):
            length = (length + 1) // 2
        fc = top // 4 * length
        self.final_block = nn.Sequential(nn.Linear(fc + dim, fc // 2), nn.Mish(), nn.Linear(fc // 2, 1))

    def forward(self, x, cond, t):
        x, emb = x.transpose(1, 2), self.time_mlp(t)
        for res1, res2, down in self.blocks:
            x = down(res2(res1(x, emb), emb))
        x = self.mid_down1(self.mid_block1(x, emb))
        x = self.mid_down2(self.mid_block2(x, emb))
        return self.final_block(torch.cat([x.reshape(len(x), -1), emb], dim=-1))


class LossWeights(nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.register_buffer("weights", weights)


class OriginalDiffusion(nn.Module):
    """The original GaussianDiffusion's state: model.*, 12 schedule buffers (numpy cosine), loss_fn.weights."""

    def __init__(self, model, n_steps, horizon=None, transition_dim=None, action_dim=None, action_weight=10.0):
        super().__init__()
        self.model = model
        steps = n_steps + 1  # the original's cosine_beta_schedule, in numpy float64
        x = np.linspace(0, steps, steps)
        ac = np.cos(((x / steps) + 0.008) / 1.008 * np.pi * 0.5) ** 2
        betas = torch.tensor(np.clip(1 - ac[1:] / ac[:-1], 0, 0.999), dtype=torch.float32)
        alphas = 1 - betas
        cum = torch.cumprod(alphas, 0)
        prev = torch.cat([torch.ones(1), cum[:-1]])
        var = betas * (1 - prev) / (1 - cum)
        for name, value in [
            ("betas", betas), ("alphas_cumprod", cum), ("alphas_cumprod_prev", prev),
            ("sqrt_alphas_cumprod", cum.sqrt()), ("sqrt_one_minus_alphas_cumprod", (1 - cum).sqrt()),
            ("log_one_minus_alphas_cumprod", (1 - cum).log()), ("sqrt_recip_alphas_cumprod", (1 / cum).sqrt()),
            ("sqrt_recipm1_alphas_cumprod", (1 / cum - 1).sqrt()), ("posterior_variance", var),
            ("posterior_log_variance_clipped", var.clamp(min=1e-20).log()),
            ("posterior_mean_coef1", betas * prev.sqrt() / (1 - cum)),
            ("posterior_mean_coef2", (1 - prev) * alphas.sqrt() / (1 - cum)),
        ]:
            self.register_buffer(name, value)
        if horizon is not None:  # the diffusion model's WeightedL2; the value loss holds no buffer
            weights = torch.ones(horizon, transition_dim)
            weights[0, :action_dim] = action_weight
            self.loss_fn = LossWeights(weights)


def randomize(module: nn.Module, seed: int, scale: float = 0.2) -> nn.Module:
    """Every parameter random (GroupNorm gains and biases too), so swapped keys of equal shape change outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def save_original_checkpoint(path, model: nn.Module, ema: nn.Module, step: int) -> None:
    """The original trainer's file: torch.save({'step', 'model', 'ema'})."""
    torch.save({"step": step, "model": model.state_dict(), "ema": ema.state_dict()}, path)


# ---------------------------------------------------------------------------------------------------- diffusers
def diffusers_names(original: nn.Module, kind: str) -> dict[str, str]:
    """original key → UNet1DModel key, spelled out level by level (the diffusers conversion pairs them in order)."""
    res = {"blocks.0.block.0": "conv_in.conv1d", "blocks.0.block.2": "conv_in.group_norm",
           "blocks.1.block.0": "conv_out.conv1d", "blocks.1.block.2": "conv_out.group_norm",
           "time_mlp.1": "time_emb", "residual_conv": "residual_conv"}
    names = {"time_mlp.1": "time_mlp.linear_1", "time_mlp.3": "time_mlp.linear_2"}

    def resblock(ours, theirs):
        for a, b in res.items():
            names[f"{ours}.{a}"] = f"{theirs}.{b}"

    if kind == "diffusion":
        for i in range(len(original.downs)):
            resblock(f"downs.{i}.0", f"down_blocks.{i}.resnets.0")
            resblock(f"downs.{i}.1", f"down_blocks.{i}.resnets.1")
            names[f"downs.{i}.3.conv"] = f"down_blocks.{i}.downsample.conv"
        resblock("mid_block1", "mid_block.resnets.0")
        resblock("mid_block2", "mid_block.resnets.1")
        for i in range(len(original.ups)):
            resblock(f"ups.{i}.0", f"up_blocks.{i}.resnets.0")
            resblock(f"ups.{i}.1", f"up_blocks.{i}.resnets.1")
            names[f"ups.{i}.3.conv"] = f"up_blocks.{i}.upsample.conv"
        names.update({"final_conv.0.block.0": "out_block.final_conv1d_1",
                      "final_conv.0.block.2": "out_block.final_conv1d_gn", "final_conv.1": "out_block.final_conv1d_2"})
    else:
        for i in range(len(original.blocks)):
            resblock(f"blocks.{i}.0", f"down_blocks.{i}.resnets.0")
            resblock(f"blocks.{i}.1", f"down_blocks.{i}.resnets.1")
            names[f"blocks.{i}.2.conv"] = f"down_blocks.{i}.downsample.conv"
        resblock("mid_block1", "mid_block.res1")
        resblock("mid_block2", "mid_block.res2")
        names.update({"mid_down1.conv": "mid_block.down1.conv", "mid_down2.conv": "mid_block.down2.conv",
                      "final_block.0": "out_block.final_block.0", "final_block.2": "out_block.final_block.2"})
    out = {}
    for key in original.state_dict():
        module, _, param = key.rpartition(".")
        out[key] = f"{names[module]}.{param}"
    return out


def diffusers_config(kind: str, transition_dim: int, dim: int, dim_mults) -> dict:
    """config.json of a converted Diffuser UNet1DModel (as the hub's hopper-medium-v2 folders)."""
    widths = [dim * m for m in dim_mults]
    config = {
        "_class_name": "UNet1DModel", "in_channels": transition_dim, "out_channels": transition_dim,
        "extra_in_channels": 0, "sample_size": 65536, "block_out_channels": widths,
        "down_block_types": ["DownResnetBlock1D"] * len(widths), "layers_per_block": 1,
        "time_embedding_type": "positional", "use_timestep_embedding": True, "flip_sin_to_cos": False,
        "freq_shift": 1, "norm_num_groups": 8, "act_fn": "mish",
    }
    if kind == "diffusion":
        config.update(up_block_types=["UpResnetBlock1D"] * (len(widths) - 1), mid_block_type="MidResTemporalBlock1D",
                      out_block_type="OutConv1DBlock", downsample_each_block=False)
    else:
        config.update(up_block_types=[], mid_block_type="ValueFunctionMidBlock1D", out_block_type="ValueFunction",
                      downsample_each_block=True)
    return config


def write_diffusers_folder(folder, original: nn.Module, kind: str, config: dict, fmt: str = "safetensors"):
    """A diffusers model folder built by hand: config.json + the original's tensors under diffusers' names."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = diffusers_names(original, kind)
    state = {names[k]: v.contiguous() for k, v in original.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    return folder
