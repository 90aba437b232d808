"""Time value-guided planning at the paper's Hopper settings: our GuidedPlanner against Hugging Face diffusers.

Usage: ``python benchmarks/planning_speed.py [--preset paper|cpu] [--threads T] [--repeats 7] [--n-envs 1 8 32]
[--modes exact ...] [--scaling-modes exact ...] [--diffusers-no-grad] [--quick] [--device cuda]``.
``--device cuda`` times the GPU rows (our planner on the GPU, synchronised; diffusers' rows stay on the CPU unless
``--no-diffusers``); the "compiled" modes (``planner.compile=reduce-overhead``, CUDA graphs) are for it.
diffusers is an optional extra (``pip install -e ".[bench]"``); without it the diffusers row is skipped. Not a test.

Both sides run in one process, on one observation, at one thread count (``torch.set_num_threads``), with random
weights. Settings: observation_dim 11, action_dim 3 (rows [a, s]), horizon 32, 20 diffusion steps (cosine, x0
prediction), dim_mults (1, 2, 4, 8), 2 guide steps, scale 0.1, t_stopgrad 2; ``--preset paper`` (default): U-Net
and value net dim 32, 64 candidate plans per env; ``--preset cpu``: dim 16, 8 candidates (the CPU presets).

- **ours**: each entry of ``MODES`` is a set of ``GuidedPlanner`` keyword arguments ("exact" = the paper settings);
  adding a mode is one dict entry. Every mode is timed with one env per call; ``--scaling-modes`` also at every
  ``--n-envs`` N: one call plans N envs (N × batch candidates), so one call gives N env steps.
- **diffusers**: ``ValueGuidedRLPipeline`` over two ``UNet1DModel`` built with the configs of the converted
  hopper-medium-v2 checkpoints (``diffusers_configs``) and the hub's ``DDPMScheduler`` settings.
  It needs a D4RL-style env with ``get_dataset()``: ``StandInHopper`` supplies random data. It plans one
  observation per call (N = 1), and is called as its docs do (no ``torch.no_grad()``; ``--diffusers-no-grad`` adds
  a row with one). Its tqdm progress bar is switched off (``TQDM_DISABLE``).

Calls are timed round-robin (a, b, c, a, b, c, ...) after warm-up, so machine noise hits every planner alike. The
table gives the median seconds per call, env steps/s = N / median, and the ratio to diffusers' actions/s (for N > 1
a throughput ratio: diffusers needs one call per env). FLOPs per action are counted with
``torch.utils.flop_counter`` over one call (convolutions and matmuls, forward and the guide's backward; not
elementwise ops, GroupNorm or Mish) and compared with this machine's measured fp32 matmul throughput.

Each planner runs repeats + 3 calls (a cold first call, the FLOP count, warm-up). One exact call takes about 3 s per env on one core of
this project's CPU machine, so the N = 32 row dominates: about 15-20 minutes in all at the defaults on 1 thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # diffusers' pipeline wraps its loop in tqdm; read when tqdm is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from diffuser.runs.build import build_model  # noqa: E402
from diffuser.config import DiffusionConfig, ModelConfig  # noqa: E402
from diffuser.diffusion.normalization import GaussianNormalizer  # noqa: E402
from diffuser.diffusion.guidance import ValueGuide  # noqa: E402
from diffuser.planning.guided import GuidedPlanner  # noqa: E402

OBSERVATION_DIM = 11
ACTION_DIM = 3
HORIZON = 32
N_DIFFUSION_STEPS = 20
DIM_MULTS = [1, 2, 4, 8]
SCALE = 0.1
N_GUIDE_STEPS = 2
# Network width and candidate plans per env: the paper's hopper settings, or the CPU preset's (experiment=locomotion_cpu,
# planner=locomotion_cpu). Both sides are built alike at either.
PRESETS = {"paper": {"dim": 32, "batch_size": 64}, "cpu": {"dim": 16, "batch_size": 8}}

# name → GuidedPlanner keyword arguments on top of the original code's sampler ("exact"); one entry per fast mode.
# "batch_divisor" divides the preset's candidate batch.
MODES: dict[str, dict] = {
    "exact": {},
    "bf16": {"bf16": True},
    "strided 10": {"n_sample_steps": 10},
    "strided 5": {"n_sample_steps": 5},
    "warm 4": {"warm_start_steps": 4},
    "warm 2": {"warm_start_steps": 2},
    "1 guide step": {"n_guide_steps": 1},
    "batch / 4": {"batch_divisor": 4},
    "warm 4, batch / 4": {"warm_start_steps": 4, "batch_divisor": 4},
    "exact, compiled": {"compile": "reduce-overhead"},  # CUDA graphs: for --device cuda (not timed by default)
    "warm 4, compiled": {"warm_start_steps": 4, "compile": "reduce-overhead"},
}
DEFAULT_MODES = [m for m in MODES if "compiled" not in m]


def planner_kwargs(mode: str, batch_size: int) -> dict:
    """GuidedPlanner keyword arguments of a mode at a preset's candidate batch."""
    kwargs = {"batch_size": batch_size, "scale": SCALE, "n_guide_steps": N_GUIDE_STEPS, "t_stopgrad": 2,
              "scale_grad_by_std": True, **MODES[mode]}
    kwargs["batch_size"] = max(1, batch_size // kwargs.pop("batch_divisor", 1))
    return kwargs


def diffusers_configs(dim: int) -> tuple[dict, dict]:
    """UNet1DModel configs of the converted hopper-medium-v2 checkpoints (diffusers' scripts/
    convert_models_diffuser_to_diffusers.py) at width dim: at dim 32, 3,956,302 and 2,294,817 parameters, as the
    original networks."""
    common = dict(
        in_channels=OBSERVATION_DIM + ACTION_DIM,
        out_channels=OBSERVATION_DIM + ACTION_DIM,
        extra_in_channels=0,
        sample_size=65536,
        block_out_channels=tuple(dim * m for m in DIM_MULTS),
        down_block_types=("DownResnetBlock1D",) * len(DIM_MULTS),
        layers_per_block=1,
        time_embedding_type="positional",
        use_timestep_embedding=True,
        flip_sin_to_cos=False,
        freq_shift=1,
        norm_num_groups=8,
        act_fn="mish",
    )
    unet = dict(
        common,
        up_block_types=("UpResnetBlock1D",) * (len(DIM_MULTS) - 1),
        mid_block_type="MidResTemporalBlock1D",
        out_block_type="OutConv1DBlock",
        downsample_each_block=False,
    )
    value = dict(
        common,
        up_block_types=(),
        mid_block_type="ValueFunctionMidBlock1D",
        out_block_type="ValueFunction",
        downsample_each_block=True,
    )
    return unet, value


DIFFUSERS_SCHEDULER = dict(
    num_train_timesteps=N_DIFFUSION_STEPS,
    beta_schedule="squaredcos_cap_v2",  # same betas as our cosine schedule
    prediction_type="sample",  # x0 prediction
    variance_type="fixed_small_log",
    clip_sample=False,
)


@dataclass
class Entry:
    """One timed planner: ``call()`` plans ``n_envs`` env steps."""

    name: str
    n_envs: int
    call: Callable[[], object]
    flops: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def steps_per_second(self) -> float:
        return self.n_envs / self.median


class StandInHopper:
    """What ValueGuidedRLPipeline reads from a D4RL env: get_dataset() (for its normalization statistics) and the
    observation/action spaces. The data are random."""

    def __init__(self, seed: int, size: int = 10_000):
        import gymnasium as gym

        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBSERVATION_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        rng = np.random.default_rng(seed)
        self._data = {
            "observations": rng.standard_normal((size, OBSERVATION_DIM)).astype(np.float32),
            "actions": rng.uniform(-1.0, 1.0, (size, ACTION_DIM)).astype(np.float32),
        }

    def get_dataset(self) -> dict[str, np.ndarray]:
        return self._data


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker, whose hooks make torch.autograd.grad with respect to a
    leaf tensor fail (pytorch/pytorch#131753); the guides take exactly that gradient. Counts go to "Global" only."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of fn, as counted by torch.utils.flop_counter (convolutions and matmuls, incl. backward)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """fn, then wait for the device (a GPU call returns before its kernels finish)."""
    if device.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def matmul_gflops(n: int, repeats: int, device: torch.device = torch.device("cpu")) -> float:
    """The device's fp32 matmul throughput (CPU: at the current thread count): median over timed n × n products."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    product = synchronized(lambda: a @ b, device)
    for _ in range(2):
        product()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def build_ours(seed: int, dim: int, device: torch.device = torch.device("cpu")):
    """The diffusion and value models exactly as diffuser.runs.build.build_model makes them for the hopper presets."""
    torch.manual_seed(seed)
    transition_dim = OBSERVATION_DIM + ACTION_DIM
    data = np.random.default_rng(seed).standard_normal((10_000, transition_dim))
    normalizer = GaussianNormalizer(transition_dim).fit(data)
    diffusion_cfg = DiffusionConfig(
        n_diffusion_steps=N_DIFFUSION_STEPS, beta_schedule="cosine", predict_epsilon=False, clip_denoised=False,
        action_weight=10.0,
    )
    common = dict(horizon=HORIZON, observation_dim=OBSERVATION_DIM, action_dim=ACTION_DIM, diffusion=diffusion_cfg)
    diffusion = build_model(
        "diffusion", normalizer, model=ModelConfig(kind="diffusion", dim=dim, dim_mults=list(DIM_MULTS)), **common
    )
    value = build_model(
        "value", normalizer, model=ModelConfig(kind="value", dim=dim, dim_mults=list(DIM_MULTS)), **common
    )
    return diffusion.to(device), value.to(device)


def build_diffusers(seed: int, dim: int):
    """ValueGuidedRLPipeline with random-weight UNet1DModels at the converted hopper-medium-v2 configs."""
    from diffusers import DDPMScheduler, UNet1DModel
    from diffusers.experimental import ValueGuidedRLPipeline

    torch.manual_seed(seed)
    unet_config, value_config = diffusers_configs(dim)
    unet = UNet1DModel(**unet_config)
    value_function = UNet1DModel(**value_config)
    scheduler = DDPMScheduler(**DIFFUSERS_SCHEDULER)
    return ValueGuidedRLPipeline(value_function=value_function, unet=unet, scheduler=scheduler,
                                 env=StandInHopper(seed))


def forward_gflops(net: torch.nn.Module, channels_last: bool, batch_size: int) -> float:
    """GFLOPs of one forward pass on a (batch_size, H, D) batch (diffusers' nets take (B, D, H))."""
    x = torch.randn(batch_size, HORIZON, OBSERVATION_DIM + ACTION_DIM)
    t = torch.full((batch_size,), 10, dtype=torch.long)
    if not channels_last:
        x = x.permute(0, 2, 1)
    with torch.no_grad():
        return count_flops(lambda: net(x, t)) / 1e9


def main() -> None:
    """Build both sides, time them round-robin, print parameter counts, medians, ratios and FLOP efficiency."""
    parser = argparse.ArgumentParser(description="Time value-guided planning: ours against diffusers.")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for everything")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per planner (round-robin)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per planner after the FLOP-count call")
    parser.add_argument("--n-envs", type=int, nargs="+", default=None, help="envs per call [1 8 32]")
    parser.add_argument("--preset", choices=list(PRESETS), default="paper", help="width and candidates per env")
    parser.add_argument("--scaling-modes", nargs="+", default=["exact", "warm 2"], choices=list(MODES),
                        help="modes also timed at every --n-envs N > 1 (all modes are timed at N = 1)")
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES), help="our modes to time")
    parser.add_argument("--device", default="cpu", help="where our planner runs: cpu, cuda or cuda:N")
    parser.add_argument("--no-diffusers", action="store_true", help="skip diffusers even if it is installed")
    parser.add_argument("--diffusers-no-grad", action="store_true",
                        help="also time diffusers' pipeline called inside torch.no_grad()")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n × n fp32 matmuls for the peak")
    parser.add_argument("--seed", type=int, default=0, help="weights, data and sampling seed")
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 repeats, no warm-up, N in {1, 2}")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup, args.matmul_size = 2, 0, 1024
        args.n_envs = args.n_envs or [1, 2]
    args.n_envs = args.n_envs or [1, 8, 32]

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    observation = np.random.default_rng(args.seed + 1).standard_normal(OBSERVATION_DIM).astype(np.float32)

    dim, batch_size = PRESETS[args.preset]["dim"], PRESETS[args.preset]["batch_size"]
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"our planner on {where}")
    diffusion, value = build_ours(args.seed, dim)  # on the CPU, for the parameter and FLOP counts
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.preset} preset: H {HORIZON}, "
          f"{N_DIFFUSION_STEPS} diffusion steps, dim {dim} × {tuple(DIM_MULTS)}, {batch_size} plans per env, "
          f"{N_GUIDE_STEPS} guide steps, scale {SCALE}")
    print(f"ours:      TemporalUnet {n_params(diffusion.model):,} params "
          f"({forward_gflops(diffusion.model, True, batch_size):.3f} GFLOP/forward at batch {batch_size}), "
          f"ValueFunction {n_params(value.model):,} params ({forward_gflops(value.model, True, batch_size):.3f} "
          "GFLOP/forward)")

    entries: list[Entry] = []
    for mode in args.modes:
        diffusion, value = build_ours(args.seed, dim, device)  # fresh networks: a compiled mode compiles its own
        planner = GuidedPlanner(diffusion, ValueGuide(value.model), **planner_kwargs(mode, batch_size))
        for n in [1] + [n for n in args.n_envs if n != 1 and mode in args.scaling_modes]:
            observations = np.repeat(observation[None], n, axis=0)
            generator = torch.Generator(device=device).manual_seed(args.seed)
            ids = list(range(n))  # the same envs every call, so a warm start has previous plans after the first
            entries.append(Entry(mode, n, synchronized(lambda p=planner, o=observations, g=generator, i=ids: p.plan(
                o, generator=g, env_ids=i), device)))

    reference: Entry | None = None
    if not args.no_diffusers:
        try:
            import diffusers
        except ImportError:
            print('diffusers: not installed (pip install -e ".[bench]"); its rows are skipped')
        else:
            pipeline = build_diffusers(args.seed, dim)
            print(f"diffusers: {diffusers.__version__}, UNet1DModel {n_params(pipeline.unet):,} params "
                  f"({forward_gflops(pipeline.unet, False, batch_size):.3f} GFLOP/forward), value UNet1DModel "
                  f"{n_params(pipeline.value_function):,} params "
                  f"({forward_gflops(pipeline.value_function, False, batch_size):.3f} GFLOP/forward)")
            kwargs = dict(batch_size=batch_size, planning_horizon=HORIZON, n_guide_steps=N_GUIDE_STEPS, scale=SCALE)
            reference = Entry("diffusers", 1, lambda: pipeline(observation, **kwargs))
            entries.append(reference)
            if args.diffusers_no_grad:
                def call_no_grad():
                    with torch.no_grad():
                        return pipeline(observation, **kwargs)

                entries.append(Entry("diffusers no_grad", 1, call_no_grad))

    peak = matmul_gflops(args.matmul_size, repeats=10, device=device)
    print(f"fp32 matmul {args.matmul_size}×{args.matmul_size} on {where}: {peak:.1f} GFLOP/s (median of 10)")

    for entry in entries:  # a first call (cold: a warm start has no previous plan yet), then the FLOP count
        entry.call()
        entry.flops = count_flops(entry.call)
        for _ in range(args.warmup):
            entry.call()
    print(f"timing {len(entries)} planners × {args.repeats} calls, round-robin ...", flush=True)
    for _ in range(args.repeats):
        for entry in entries:
            start = time.perf_counter()
            entry.call()
            entry.seconds.append(time.perf_counter() - start)

    print()
    print(f"{'planner':<24} {'N':>3} {'s/call':>8} {'spread':>7} {'env steps/s':>12} {'× diffusers':>12} "
          f"{'GFLOP/action':>13} {'GFLOP/s':>8} {'% matmul':>9}")
    for entry in entries:
        spread = (max(entry.seconds) - min(entry.seconds)) / entry.median
        ratio = f"{entry.steps_per_second / reference.steps_per_second:.2f}" if reference else "–"
        achieved = entry.flops / entry.median / 1e9
        print(f"{entry.name:<24} {entry.n_envs:>3} {entry.median:>8.3f} {spread:>6.0%} "
              f"{entry.steps_per_second:>12.2f} {ratio:>12} {entry.flops / entry.n_envs / 1e9:>13.2f} "
              f"{achieved:>8.1f} {achieved / peak:>9.1%}")
    print(f"\ns/call: median of {args.repeats}; spread: (max − min) / median; × diffusers: env steps/s ÷ diffusers' "
          "actions/s (one env per call); FLOPs: convolutions and matmuls only; % matmul: achieved GFLOP/s ÷ "
          f"{peak:.1f}.")


if __name__ == "__main__":
    main()
