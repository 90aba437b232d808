"""Key maps from other implementations' weights to our TemporalUnet / ValueFunction state dicts.

**Original** (jannerm/diffuser, ``state_*.pt``): the trainer saves ``{'step', 'model', 'ema'}``, each the state dict
of a ``GaussianDiffusion`` / ``ValueDiffusion``: the network under ``model.*``, the 12 schedule buffers (``betas`` …
``posterior_mean_coef2``) and, for diffusion, ``loss_fn.weights`` (H, D). Our modules keep the original attribute
names (docs/paper_and_original.md §3.4), so network keys map to themselves, except that the ``maze2d`` branch's older
TemporalUnet has three slots per level (ResBlock, ResBlock, Down/Upsample, no attention slot), so its
``downs.i.2`` / ``ups.i.2`` become our ``downs.i.3`` / ``ups.i.3``. The wrapper buffers are not weights of ours
(we derive them from the config); they are checked against our schedule instead, so every key is accounted for.

**diffusers** ``UNet1DModel`` (the converted hopper-medium-v2 unet / value_function): the same tensors under the
names below (``RESBLOCK`` inside every residual block), the input channel-first (B, C, H) instead of (B, H, C).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

KINDS = ("diffusion", "value")

# Buffers of the original GaussianDiffusion (and ValueDiffusion, its subclass), in registration order.
ORIGINAL_SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)
ORIGINAL_LOSS_WEIGHTS = "loss_fn.weights"  # WeightedL2's (H, D) buffer; the value loss has none

# diffusers ResidualTemporalBlock1D → our ResidualTemporalBlock (the original's names).
RESBLOCK = {
    "conv_in.conv1d": "blocks.0.block.0",
    "conv_in.group_norm": "blocks.0.block.2",
    "conv_out.conv1d": "blocks.1.block.0",
    "conv_out.group_norm": "blocks.1.block.2",
    "time_emb": "time_mlp.1",
    "residual_conv": "residual_conv",
}


@dataclass
class Architecture:
    """What a checkpoint says about the network it holds; None where it does not say."""

    kind: str
    transition_dim: int
    dim: int
    dim_mults: tuple[int, ...]
    attention: bool = False
    horizon: int | None = None
    n_diffusion_steps: int | None = None
    action_weight: float | None = None
    predict_epsilon: bool | None = None


# ---------------------------------------------------------------------------------------------------- original
def split_original_state(state: Mapping[str, Tensor], source: str) -> tuple[dict, dict, str]:
    """Split an original GaussianDiffusion / ValueDiffusion state dict into (network, wrapper buffers, kind).

    The kind is read from the keys: ``model.downs.*`` is a TemporalUnet, ``model.blocks.*`` a ValueFunction.
    """
    net = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    wrapper = {k: v for k, v in state.items() if not k.startswith("model.")}
    if any(k.startswith("downs.") for k in net):
        kind = "diffusion"
    elif any(k.startswith("blocks.") for k in net):
        kind = "value"
    else:
        raise ValueError(f"{source}: no 'model.downs.*' (TemporalUnet) or 'model.blocks.*' (ValueFunction) keys; "
                         f"found {sorted(state)[:5]}: not a checkpoint of the original Diffuser code")
    allowed = set(ORIGINAL_SCHEDULE_BUFFERS) | ({ORIGINAL_LOSS_WEIGHTS} if kind == "diffusion" else set())
    unknown, missing = sorted(set(wrapper) - allowed), sorted(set(ORIGINAL_SCHEDULE_BUFFERS) - set(wrapper))
    if unknown or missing:
        raise ValueError(f"{source}: the {kind} wrapper keys are not the original's: unexpected {unknown[:5]}, "
                         f"missing {missing[:5]}")
    return net, wrapper, kind


def original_to_ours(net: Mapping[str, Tensor], kind: str) -> tuple[dict[str, Tensor], str]:
    """Original network keys → ours; returns the mapped dict and the layout name ("main" or "maze2d-branch")."""
    if kind == "value" or not any(re.match(r"downs\.\d+\.2\.conv\.", k) for k in net):
        return dict(net), "main"
    # maze2d branch: [ResBlock, ResBlock, Down/Upsample] per level; ours keeps slot 2 for attention.
    slot = re.compile(r"^(downs|ups)\.(\d+)\.2\.")
    return {slot.sub(r"\1.\2.3.", k): v for k, v in net.items()}, "maze2d-branch"


def _width(state: Mapping[str, Tensor], key: str, source: str, axis: int) -> int:
    if key not in state:
        raise ValueError(f"{source}: no '{key}' in the weights: not a TemporalUnet / ValueFunction of the "
                         "Diffuser layout")
    return int(state[key].shape[axis])


def infer_architecture(net: Mapping[str, Tensor], kind: str, source: str) -> Architecture:
    """Widths, levels and attention of a network from its (our-named) weights."""
    dim = _width(net, "time_mlp.1.weight", source, 1)  # Linear(dim, 4 dim)
    prefix = "downs" if kind == "diffusion" else "blocks"
    levels = sorted({int(k.split(".")[1]) for k in net if k.startswith(prefix + ".")})
    widths = [_width(net, f"{prefix}.{i}.0.blocks.0.block.0.weight", source, 0) for i in levels]
    if levels != list(range(len(levels))) or any(w % dim for w in widths):
        raise ValueError(f"{source}: level widths {widths} are not multiples of dim {dim}")
    attention_key = f"{prefix}.0.{2 if kind == 'diffusion' else 3}.fn.norm.g"
    return Architecture(
        kind=kind,
        transition_dim=_width(net, f"{prefix}.0.0.blocks.0.block.0.weight", source, 1),
        dim=dim,
        dim_mults=tuple(w // dim for w in widths),
        attention=attention_key in net,
    )


def original_wrapper_settings(wrapper: Mapping[str, Tensor], arch: Architecture) -> Architecture:
    """Add what the original wrapper buffers record: N (len(betas)), horizon and action weight (loss weights)."""
    arch.n_diffusion_steps = int(wrapper["betas"].shape[0])
    if ORIGINAL_LOSS_WEIGHTS in wrapper:
        weights = wrapper[ORIGINAL_LOSS_WEIGHTS]
        arch.horizon = int(weights.shape[0])
        arch.action_weight = float(weights[0, 0])
    return arch


def check_original_schedule(wrapper: Mapping[str, Tensor], schedule: nn.Module, source: str) -> None:
    """Each original schedule buffer must equal ours (same N and beta schedule), else name the first that differs."""
    ours = {name: getattr(schedule, name) for name in ORIGINAL_SCHEDULE_BUFFERS if hasattr(schedule, name)}
    ours["log_one_minus_alphas_cumprod"] = torch.log(1.0 - schedule.alphas_cumprod)
    for name in ORIGINAL_SCHEDULE_BUFFERS:
        theirs, mine = wrapper[name].detach().double().cpu(), ours[name].detach().double().cpu()
        if theirs.shape != mine.shape or not torch.allclose(theirs, mine, rtol=1e-4, atol=1e-6):
            gap = (theirs - mine).abs().max().item() if theirs.shape == mine.shape else "shape"
            raise ValueError(f"{source}: schedule buffer '{name}' {tuple(theirs.shape)} differs from ours "
                             f"{tuple(mine.shape)} (max difference {gap}): set diffusion.beta_schedule and "
                             "diffusion.n_diffusion_steps to the checkpoint's")


# ---------------------------------------------------------------------------------------------------- diffusers
# UNet1DModel constructor defaults, applied to fields a config.json leaves out (as diffusers does).
DIFFUSERS_DEFAULTS = {
    "in_channels": 2, "out_channels": 2, "extra_in_channels": 0, "time_embedding_type": "fourier",
    "flip_sin_to_cos": True, "use_timestep_embedding": False, "freq_shift": 0.0,
    "down_block_types": ["DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D"],
    "up_block_types": ["AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip"], "mid_block_type": "UNetMidBlock1D",
    "out_block_type": None, "block_out_channels": [32, 32, 64], "act_fn": None, "norm_num_groups": 8,
    "layers_per_block": 1, "downsample_each_block": False,
}
DIFFUSERS_OUT_BLOCKS = {"OutConv1DBlock": "diffusion", "ValueFunction": "value"}


def diffusers_architecture(config: Mapping, source: str) -> Architecture:
    """Check a UNet1DModel config.json describes the Diffuser layout and return its architecture.

    Only the settings that equal our networks convert: positional sin-first time embedding with frequencies
    exp(−ln(10⁴)·k/(dim/2 − 1)) (flip_sin_to_cos false, freq_shift 1) through Linear → Mish → Linear, two
    residual blocks per level (layers_per_block 1), Mish, GroupNorm(8).
    """
    if config.get("_class_name", "UNet1DModel") != "UNet1DModel":
        raise ValueError(f"{source}: a {config['_class_name']} config, not UNet1DModel")
    cfg = {**DIFFUSERS_DEFAULTS, **config}
    kind = DIFFUSERS_OUT_BLOCKS.get(cfg["out_block_type"])
    if kind is None:
        raise ValueError(f"{source}: out_block_type {cfg['out_block_type']!r} is neither 'OutConv1DBlock' (the "
                         "Diffuser unet) nor 'ValueFunction' (its value function)")
    widths = [int(w) for w in cfg["block_out_channels"]]
    n = len(widths)
    required = {
        "time_embedding_type": "positional", "use_timestep_embedding": True, "flip_sin_to_cos": False,
        "freq_shift": 1, "act_fn": "mish", "layers_per_block": 1, "extra_in_channels": 0,
        "down_block_types": ["DownResnetBlock1D"] * n,
    }
    if kind == "diffusion":
        required.update(mid_block_type="MidResTemporalBlock1D", up_block_types=["UpResnetBlock1D"] * (n - 1),
                        downsample_each_block=False, norm_num_groups=8, out_channels=cfg["in_channels"])
    else:
        required.update(mid_block_type="ValueFunctionMidBlock1D", up_block_types=[], downsample_each_block=True)
    for key, want in required.items():
        have = list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key]
        if have != want:
            absent = " (the UNet1DModel default: config.json omits it)" if key not in config else ""
            raise ValueError(f"{source}: {key} is {have!r}{absent}, but only the Diffuser layout converts, which "
                             f"needs {key}={want!r}")
    dim = widths[0]
    if any(w % dim for w in widths):
        raise ValueError(f"{source}: block_out_channels {widths} are not multiples of the first, {dim}")
    return Architecture(kind=kind, transition_dim=int(cfg["in_channels"]), dim=dim,
                        dim_mults=tuple(w // dim for w in widths))


def diffusers_scheduler_settings(config: Mapping, arch: Architecture, source: str) -> Architecture:
    """Add what a DDPMScheduler config records about the weights: N and x0 or ε prediction (cosine betas only).

    Its sampling options (clip_sample, variance_type) describe diffusers' sampler, not the weights: not checked.
    """
    schedule = config.get("beta_schedule", "linear")
    if schedule != "squaredcos_cap_v2":
        raise ValueError(f"{source}: beta_schedule {schedule!r} has no counterpart here; the Diffuser weights use "
                         "'squaredcos_cap_v2' (our cosine schedule)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("sample", "epsilon"):
        raise ValueError(f"{source}: prediction_type {prediction!r}: only 'sample' (x0) and 'epsilon' convert")
    arch.n_diffusion_steps = int(config.get("num_train_timesteps", 1000))
    arch.predict_epsilon = prediction == "epsilon"
    return arch


def _rename(patterns: list[tuple[str, Callable[[re.Match], str | None]]], key: str) -> str | None:
    for pattern, rename in patterns:
        match = re.fullmatch(pattern, key)
        if match:
            return rename(match)
    return None


def _resblock(prefix: str, rest: str) -> str | None:
    """``prefix`` + our name of a residual-block key ``rest`` (diffusers names), or None if it has none."""
    for theirs, ours in RESBLOCK.items():
        if rest.startswith(theirs + "."):
            return f"{prefix}.{ours}{rest[len(theirs):]}"
    return None


_COMMON = [
    (r"time_mlp\.linear_1\.(\w+)", lambda m: f"time_mlp.1.{m[1]}"),
    (r"time_mlp\.linear_2\.(\w+)", lambda m: f"time_mlp.3.{m[1]}"),
]
DIFFUSERS_UNET_KEYS = _COMMON + [
    (r"down_blocks\.(\d+)\.resnets\.([01])\.(.+)", lambda m: _resblock(f"downs.{m[1]}.{m[2]}", m[3])),
    (r"down_blocks\.(\d+)\.downsample\.conv\.(\w+)", lambda m: f"downs.{m[1]}.3.conv.{m[2]}"),
    (r"mid_block\.resnets\.([01])\.(.+)", lambda m: _resblock(f"mid_block{int(m[1]) + 1}", m[2])),
    (r"up_blocks\.(\d+)\.resnets\.([01])\.(.+)", lambda m: _resblock(f"ups.{m[1]}.{m[2]}", m[3])),
    (r"up_blocks\.(\d+)\.upsample\.conv\.(\w+)", lambda m: f"ups.{m[1]}.3.conv.{m[2]}"),
    (r"out_block\.final_conv1d_1\.(\w+)", lambda m: f"final_conv.0.block.0.{m[1]}"),
    (r"out_block\.final_conv1d_gn\.(\w+)", lambda m: f"final_conv.0.block.2.{m[1]}"),
    (r"out_block\.final_conv1d_2\.(\w+)", lambda m: f"final_conv.1.{m[1]}"),
]
DIFFUSERS_VALUE_KEYS = _COMMON + [
    (r"down_blocks\.(\d+)\.resnets\.([01])\.(.+)", lambda m: _resblock(f"blocks.{m[1]}.{m[2]}", m[3])),
    (r"down_blocks\.(\d+)\.downsample\.conv\.(\w+)", lambda m: f"blocks.{m[1]}.2.conv.{m[2]}"),
    (r"mid_block\.res([12])\.(.+)", lambda m: _resblock(f"mid_block{m[1]}", m[2])),
    (r"mid_block\.down([12])\.conv\.(\w+)", lambda m: f"mid_down{m[1]}.conv.{m[2]}"),
    (r"out_block\.final_block\.([02])\.(\w+)", lambda m: f"final_block.{m[1]}.{m[2]}"),
]


def diffusers_to_ours(state: Mapping[str, Tensor], kind: str, source: str) -> dict[str, Tensor]:
    """UNet1DModel keys → ours; a key with no counterpart is refused by name."""
    patterns = DIFFUSERS_UNET_KEYS if kind == "diffusion" else DIFFUSERS_VALUE_KEYS
    mapped, unknown = {}, []
    for key, value in state.items():
        ours = _rename(patterns, key)
        if ours is None:
            unknown.append(key)
        else:
            mapped[ours] = value
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} keys have no counterpart in our "
                         f"{'TemporalUnet' if kind == 'diffusion' else 'ValueFunction'}: {unknown[:5]}")
    return mapped


# ---------------------------------------------------------------------------------------------------- loading
def load_mapped(net: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Strict load: every key of ours filled, every mapped key used, shapes equal (a mismatch names both)."""
    own = net.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"{source}: '{key}' has shape {tuple(value.shape)} in the checkpoint but "
                             f"{tuple(own[key].shape)} in our {type(net).__name__} built from the config")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match our {type(net).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


# ---------------------------------------------------------------------------------------------------- export
def diffusers_config(kind: str, transition_dim: int, dim: int, dim_mults: tuple[int, ...]) -> dict:
    """UNet1DModel config.json of our network: the Diffuser layout, as the hub's converted hopper-medium-v2
    folders (``sample_size`` unused by the layout)."""
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


def _resblock_back(prefix: str, rest: str) -> str | None:
    """``prefix`` + diffusers' name of a residual-block key ``rest`` (our names), or None if it has none."""
    for theirs, ours in RESBLOCK.items():
        if rest.startswith(ours + "."):
            return f"{prefix}.{theirs}{rest[len(ours):]}"
    return None


_COMMON_BACK = [
    (r"time_mlp\.1\.(\w+)", lambda m: f"time_mlp.linear_1.{m[1]}"),
    (r"time_mlp\.3\.(\w+)", lambda m: f"time_mlp.linear_2.{m[1]}"),
]
OUR_UNET_KEYS = _COMMON_BACK + [
    (r"downs\.(\d+)\.([01])\.(.+)", lambda m: _resblock_back(f"down_blocks.{m[1]}.resnets.{m[2]}", m[3])),
    (r"downs\.(\d+)\.3\.conv\.(\w+)", lambda m: f"down_blocks.{m[1]}.downsample.conv.{m[2]}"),
    (r"mid_block([12])\.(.+)", lambda m: _resblock_back(f"mid_block.resnets.{int(m[1]) - 1}", m[2])),
    (r"ups\.(\d+)\.([01])\.(.+)", lambda m: _resblock_back(f"up_blocks.{m[1]}.resnets.{m[2]}", m[3])),
    (r"ups\.(\d+)\.3\.conv\.(\w+)", lambda m: f"up_blocks.{m[1]}.upsample.conv.{m[2]}"),
    (r"final_conv\.0\.block\.0\.(\w+)", lambda m: f"out_block.final_conv1d_1.{m[1]}"),
    (r"final_conv\.0\.block\.2\.(\w+)", lambda m: f"out_block.final_conv1d_gn.{m[1]}"),
    (r"final_conv\.1\.(\w+)", lambda m: f"out_block.final_conv1d_2.{m[1]}"),
]
OUR_VALUE_KEYS = _COMMON_BACK + [
    (r"blocks\.(\d+)\.([01])\.(.+)", lambda m: _resblock_back(f"down_blocks.{m[1]}.resnets.{m[2]}", m[3])),
    (r"blocks\.(\d+)\.2\.conv\.(\w+)", lambda m: f"down_blocks.{m[1]}.downsample.conv.{m[2]}"),
    (r"mid_block([12])\.(.+)", lambda m: _resblock_back(f"mid_block.res{m[1]}", m[2])),
    (r"mid_down([12])\.conv\.(\w+)", lambda m: f"mid_block.down{m[1]}.conv.{m[2]}"),
    (r"final_block\.([02])\.(\w+)", lambda m: f"out_block.final_block.{m[1]}.{m[2]}"),
]


def ours_to_diffusers(state: Mapping[str, Tensor], kind: str, source: str) -> dict[str, Tensor]:
    """Our TemporalUnet / ValueFunction keys → UNet1DModel's; a key with no counterpart (attention) is refused."""
    patterns = OUR_UNET_KEYS if kind == "diffusion" else OUR_VALUE_KEYS
    mapped, unknown = {}, []
    for key, value in state.items():
        theirs = _rename(patterns, key)
        if theirs is None:
            unknown.append(key)
        else:
            mapped[theirs] = value.detach().cpu().contiguous()
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} keys have no counterpart in diffusers' UNet1DModel "
                         f"(it has no attention blocks): {unknown[:5]}")
    return mapped
