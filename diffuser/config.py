"""Typed config schema: one dataclass per Hydra group, registered in Hydra's ConfigStore.

YAML files under ``configs/`` are named value sets checked against these types; entry points convert the composed
config once with ``OmegaConf.to_object`` and build objects from plain fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class EnvConfig:
    """Environment and the dataset its models are trained on."""

    name: str = "maze2d-umaze-v1"  # gymnasium id (registered on `import diffuser.envs`)
    dataset: Optional[str] = None  # dataset name, HDF5 path or minari:<id>; None = same as `name`
    generate_if_missing: bool = False  # Maze2D: run the D4RL generation procedure when no file is found
    generate_num_samples: int = 1_000_000  # steps generated when generate_if_missing fires
    preprocess: list[str] = field(default_factory=list)  # e.g. [maze2d_set_terminals]
    normalizer: str = "limits"  # identity | gaussian | limits | safe_limits | cdf
    goal_conditioned: bool = True  # condition on the first AND last state (GoalDataset), else the first only
    max_path_length: int = 40000  # longest allowed episode; windows never start past max_path_length - horizon
    use_padding: bool = False  # let windows run past an episode's end into zero rows
    drop_last_transition: bool = True  # Maze2D: drop each segment's last row, as the original does
    termination_penalty: float = 0.0  # added to the last reward of an episode that ends in a terminal
    discount: float = 0.997  # value targets; planning reads it from the value run, so the two cannot differ
    value_targets: str = "raw"  # value runs: raw discounted returns (the original) | standardized ((G − mean) / std)
    gym_version: str = "v4"  # locomotion: gymnasium Hopper/Walker2d/HalfCheetah-v4 (D4RL parity) or v5
    stride: int = 1  # Maze2D: windows keep every stride-th state, so H states span (H-1)*stride+1 steps (1: paper)


@dataclass
class ModelConfig:
    """Network: the diffusion TemporalUnet (or, as an option, TemporalTransformer) or the ValueFunction."""

    kind: str = "diffusion"  # diffusion | value | bc | iql | invdyn | dynamics
    network: str = "unet"  # kind diffusion: unet (TemporalUnet, the paper's) | transformer (TemporalTransformer, DiT
    #   blocks; not in the paper, and refused with the paper presets: check_network)
    dim: int = 32  # U-Net base channel width (bc, iql, invdyn: hidden width of the MLPs)
    dim_mults: list[int] = field(default_factory=lambda: [1, 4, 8])  # U-Net: absolute width multipliers per level
    attention: bool = False  # U-Net: linear attention in every level (HalfCheetah)
    width: int = 64  # transformer: token width (the presets' dim, dim_mults and attention are the U-Net's)
    depth: int = 4  # transformer: DiT blocks
    heads: int = 4  # transformer: attention heads, width / heads channels each


@dataclass
class DiffusionConfig:
    """DDPM settings (Ho et al. 2020 with the original's x0 prediction and cosine schedule)."""

    n_diffusion_steps: int = 64
    beta_schedule: str = "cosine"  # cosine | linear
    predict_epsilon: bool = False  # False: the network predicts x0, as in every original config
    clip_denoised: bool = True  # clamp predicted x0 to [-1, 1] (Maze2D with the Limits normalizer)
    action_weight: float = 1.0  # loss weight of the first action
    loss_discount: float = 1.0  # per-step loss weight discount (normalized to mean 1)


@dataclass
class IQLConfig:
    """IQL critics (model.kind=iql; diffuser/baselines/iql.py): CORL's settings. The discount is env.discount."""

    expectile: float = 0.7  # τ of the expectile V loss
    beta: float = 3.0  # inverse temperature of the advantage weights of the policy
    target_update: float = 0.005  # α of the Polyak update of the target Q networks, every optimizer step


@dataclass
class TrainerConfig:
    """Step-based training loop; the files of configs/trainer/ state only what differs from these defaults."""

    n_train_steps: int = 2_000_000
    batch_size: int = 32  # per micro-batch
    gradient_accumulate_every: int = 2  # micro-batches per optimizer step
    learning_rate: float = 2e-4
    lr_schedule: str = "constant"  # constant | cosine (a half cosine down to 0 at n_train_steps); not in the paper
    lr_warmup_steps: int = 0  # linear warm-up steps before the schedule; not in the paper
    bf16: bool = False  # bfloat16 autocast for the forward pass (weights, Adam, EMA stay float32); not in the paper
    compile: Optional[str] = None  # torch.compile mode of the loss (forward + backward): None (eager) | default |
    #   reduce-overhead (CUDA graphs; for GPUs) | max-autotune; not in the paper (docs/speed.md)
    ema_decay: float = 0.995
    step_start_ema: int = 2000  # before this step the EMA is a hard copy
    update_ema_every: int = 10
    log_freq: int = 100
    save_freq: int = 1000
    sample_freq: int = 1000  # steps between sampled-plan images (0: never)
    n_samples: int = 4  # plans drawn per sample image
    keep_checkpoints: int = 3  # newest step folders kept (0: all)


@dataclass
class LoggerConfig:
    """W&B (offline by default; $WANDB_MODE wins) or disabled; metrics.jsonl is always written."""

    backend: str = "wandb"  # wandb | disabled
    mode: str = "offline"  # offline | online
    project: str = "diffuser"
    entity: Optional[str] = None


@dataclass
class TrainConfig:
    """python train.py"""

    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    horizon: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    exp_name: str = "cpu"
    runs_root: str = "runs"
    run_dir: Optional[str] = None  # resume (or create) this folder instead of a new timestamped one


@dataclass
class GuideConfig:
    """Value guidance of the reverse process (locomotion; the original's ``n_step_guided_p_sample``)."""

    kind: str = "value"  # value | none
    critic: str = "value"  # whose gradient guides (and, unless planner.select says otherwise, which ranks the
    #   candidates): value (the value UNet, the paper's) | iql_v (Σ_h V(s_h) of an IQL run) | iql_q (Q(s_0, a_0))
    scale: Optional[float] = None  # step size of the guide gradient; None: the original's for env.name (resolve_guide)
    n_guide_steps: int = 2  # gradient steps per denoising step
    t_stopgrad: Optional[int] = None  # no guidance for t < t_stopgrad; None: the original's for env.name
    scale_grad_by_std: bool = True  # multiply the gradient by the posterior variance (the original's flag name)


@dataclass
class PlannerConfig:
    """Planner and evaluation (Maze2D: plan once and track; locomotion: replan every step)."""

    n_episodes: int = 150  # evaluated together: one batched planning call per env step
    multi_task: bool = False  # Maze2D only: a random goal per episode instead of the env's fixed goal
    max_episode_steps: Optional[int] = None  # None: the env's own limit (Maze2D 300 / 600 / 800; locomotion 1000)
    n_images: int = 10  # episodes drawn in media/plans.png (Maze2D: path over the maze; locomotion: first plan)
    batch_size: int = 64  # locomotion: candidate plans per env, the best by value is executed
    video: bool = True  # media/rollout.mp4 of the first episode; locomotion also plan composites (MUJOCO_GL=egl)
    # Fast modes (the original code's sampler when all are off; see diffuser/planning/guided.py); the strided
    # sampler also serves Maze2D, the warm start and bf16 only locomotion:
    n_sample_steps: Optional[int] = None  # strided sampler over this many of the N training steps; None: all N
    scheduler: str = "ddpm"  # ddpm (the paper's; strided with n_sample_steps) or ddim (diffusion/schedulers.py)
    eta: float = 0.0  # scheduler=ddim only: 0 deterministic, 1 the DDPM step
    warm_start_steps: Optional[int] = 0  # >0: denoise the previous plan, shifted and noised, for only this many
    #   steps; None: guide.t_stopgrad + 2, so that the value gradient acts at the first two (resolve_warm_start)
    bf16: bool = False  # bfloat16 autocast for the networks
    compile: Optional[str] = None  # locomotion: torch.compile mode of the denoiser and the guide's network (None:
    #   eager; reduce-overhead: CUDA graphs, for GPUs; shapes are fixed per number of running episodes)
    select: Optional[str] = None  # locomotion: the critic that ranks the candidates (value | iql_v | iql_q | rollout);
    #   None: guide.critic (planning/critics.py). Not in the paper
    fresh_candidates: int = 0  # locomotion: unguided candidates per env from fresh noise beside the guided ones
    fresh_steps: int = 4  # DDIM steps (η 0) of those fresh candidates
    inverse_dynamics: bool = False  # locomotion: execute f(s_0, ŝ_1) of an inverse-dynamics run instead of the
    #   planned first action (Decision Diffuser's way; not in the paper)
    # Maze2D closed loop (all off: the paper's planner, one plan per episode; see diffuser/planning/maze2d.py):
    horizon_fractions: Optional[list[float]] = None  # candidate plan lengths as fractions of the run's horizon, in
    #   states (rounded to lengths the network takes; h states span (h − 1)·env.stride + 1 env steps); the shortest
    #   dynamically consistent plan is kept
    n_candidates: int = 1  # samples per horizon and episode
    max_residual: float = 5.0  # dynamic consistency a plan must meet (velocity units; the env's limit is 5)
    replan_lag: float = 0.0  # >0: replan an episode whose position is this far from where its plan puts it now
    replan_every: int = 0  # >0: replan an episode whose plan is this many env steps old
    replan_check_every: int = 10  # env steps between replanning checks (the stale episodes replan in one call)
    track_speed: float = 1.0  # Maze2D: run along the plan's path this many times faster than planned (1: the original)
    track_p_gain: float = 1.0  # Maze2D tracker: a = k_p·(waypoint − position) + k_d·(its velocity − velocity)
    track_d_gain: float = 1.0  # (1 and 1: the original rule)


@dataclass
class PlanConfig:
    """python plan.py"""

    env: EnvConfig = field(default_factory=EnvConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    guide: GuideConfig = field(default_factory=GuideConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    diffusion_run: Optional[str] = None  # run folder (diffusion or bc); None = newest under runs/<env>/<exp_name>/
    value_run: Optional[str] = None  # locomotion with guide=value: the value run folder
    inverse_dynamics_run: Optional[str] = None  # with planner.inverse_dynamics: the run; None = newest
    #   runs/<env>/invdyn/
    critic_run: Optional[str] = None  # locomotion with an IQL critic (guide.critic / planner.select iql_*): the IQL
    #   run folder; None = newest under runs/<env>/iql/
    dynamics_run: Optional[str] = None  # locomotion with the rollout critic: the forward dynamics run folder; None =
    #   newest under runs/<env>/dynamics/
    checkpoint: Optional[str] = None  # step folder name; None = the run's latest
    exp_name: str = "cpu"
    runs_root: str = "runs"
    seed: int = 0
    device: str = "auto"


# ---------------------------------------------------------------------------------- the original's per-dataset settings
# The original overrides its base locomotion settings by dataset name (config/locomotion.py): the three halfcheetah
# datasets of the paper train H 4 with dim_mults (1, 4, 8) (attention in the diffusion model) and guide with scale
# 0.001 from t = 4; hopper-medium-expert guides with scale 0.0001 from t = 4. Hydra's defaults list cannot branch on a
# value such as env.name, so the names are listed here, once: plan.py fills an unset guide scale / t_stopgrad from
# them (resolve_guide), and train.py refuses a locomotion preset built for the other architecture
# (check_locomotion_experiment).
HALFCHEETAH_DATASETS = ("halfcheetah-medium-v2", "halfcheetah-medium-replay-v2", "halfcheetah-medium-expert-v2")
ORIGINAL_GUIDES: dict[str, tuple[float, int]] = {  # dataset → (scale, t_stopgrad)
    **{name: (0.001, 4) for name in HALFCHEETAH_DATASETS},
    "hopper-medium-expert-v2": (0.0001, 4),
}
BASE_GUIDE = (0.1, 2)  # every other dataset


def resolve_guide(guide: GuideConfig, dataset: str) -> GuideConfig:
    """The guide with an unset (None) scale or t_stopgrad replaced by the original's value for ``dataset``; values
    set in the config or on the command line are kept."""
    scale, t_stopgrad = ORIGINAL_GUIDES.get(dataset, BASE_GUIDE)
    return dataclasses.replace(
        guide,
        scale=scale if guide.scale is None else guide.scale,
        t_stopgrad=t_stopgrad if guide.t_stopgrad is None else guide.t_stopgrad,
    )


def resolve_warm_start(planner: PlannerConfig, guide: GuideConfig) -> PlannerConfig:
    """The planner with an unset (None) warm_start_steps replaced by guide.t_stopgrad + 2: the warm start's first two
    steps lie at or above t_stopgrad, so the value gradient acts at them (the CPU default: 4 on hopper and walker2d,
    6 on halfcheetah; with guide=none, whose t_stopgrad is 0, a 2-step warm start). A number is kept as given."""
    if planner.warm_start_steps is not None:
        return planner
    return dataclasses.replace(planner, warm_start_steps=guide.t_stopgrad + 2)


# Locomotion presets (experiment option) → the preset for the other architecture: hopper / walker2d (H 32, dim_mults
# (1, 2, 4, 8)) against halfcheetah (H 4, dim_mults (1, 4, 8)), paper and CPU sizes alike.
LOCOMOTION_EXPERIMENTS = {"locomotion": "halfcheetah", "locomotion_value": "halfcheetah_value",
                          "locomotion_cpu": "halfcheetah_cpu", "locomotion_cpu_value": "halfcheetah_cpu_value"}
LOCOMOTION_EXPERIMENTS.update({v: k for k, v in LOCOMOTION_EXPERIMENTS.items()})


def check_locomotion_experiment(experiment: Optional[str], dataset: str) -> None:
    """Refuse a locomotion preset (``experiment=...``) whose architecture is not the original's for ``dataset``,
    naming the preset to pass. Other experiments (BC, Maze2D) are not checked."""
    if experiment not in LOCOMOTION_EXPERIMENTS:
        return
    other = LOCOMOTION_EXPERIMENTS[experiment]
    value = experiment.endswith("_value")
    if dataset in HALFCHEETAH_DATASETS and not experiment.startswith("halfcheetah"):
        raise ValueError(
            f"{dataset} needs experiment={other}: the original trains it with horizon 4 and dim_mults "
            f"(1, 4, 8){'' if value else ' and attention'}, and experiment={experiment} is the hopper / walker2d "
            "preset (horizon 32, dim_mults (1, 2, 4, 8))"
        )
    if experiment.startswith("halfcheetah") and not dataset.startswith("halfcheetah"):
        raise ValueError(
            f"{dataset} needs experiment={other}: experiment={experiment} is the halfcheetah preset "
            "(horizon 4, dim_mults (1, 4, 8)); pass env.name=halfcheetah-... with it"
        )


# Denoisers of model.network. The paper presets (experiment option → its CPU preset) keep the paper's U-Net; the
# transformer is an option of the CPU presets and of plain `python train.py`.
NETWORKS = ("unet", "transformer")
PAPER_EXPERIMENTS = {"maze2d_umaze": "maze2d_umaze_cpu", "maze2d_medium": "maze2d_medium_cpu",
                     "maze2d_large": "maze2d_large_cpu", "locomotion": "locomotion_cpu",
                     "halfcheetah": "halfcheetah_cpu", "locomotion_value": "locomotion_cpu_value",
                     "halfcheetah_value": "halfcheetah_cpu_value"}


def check_network(network: str, kind: str, experiment: Optional[str] = None, exp_name: Optional[str] = None) -> None:
    """Refuse an unknown model.network, a transformer for a model kind other than diffusion, and a transformer with
    a paper preset (``experiment=...`` of PAPER_EXPERIMENTS, or exp_name paper*), naming what to pass instead."""
    if network not in NETWORKS:
        raise ValueError(f"model.network={network}: valid {list(NETWORKS)}")
    if network == "unet":
        return
    if kind != "diffusion":
        raise ValueError(
            f"model.network={network} is for the diffusion model only; model.kind={kind} keeps its own network (the "
            "value model is the paper's U-Net): drop model=temporal_transformer / model.network=transformer"
        )
    if experiment in PAPER_EXPERIMENTS:
        raise ValueError(
            f"experiment={experiment} is a paper preset and keeps the paper's U-Net; the transformer is an option of "
            f"the CPU presets: pass experiment={PAPER_EXPERIMENTS[experiment]} model=temporal_transformer"
        )
    if exp_name is not None and exp_name.startswith("paper"):
        raise ValueError(
            f"exp_name={exp_name} names the paper's runs, which keep the paper's U-Net; train the transformer under "
            "another exp_name (e.g. exp_name=cpu_transformer) with a CPU preset (experiment=maze2d_*_cpu)"
        )


def check_batch(batch_size: int, gradient_accumulate_every: int) -> None:
    """A step takes batch_size × gradient_accumulate_every windows (32 × 2 in the paper, 64 × 1 in the locomotion CPU
    presets): both must be positive."""
    for key, value in (("batch_size", batch_size), ("gradient_accumulate_every", gradient_accumulate_every)):
        if value < 1:
            raise ValueError(f"trainer.{key}={value} must be at least 1 (a step takes trainer.batch_size × "
                             "trainer.gradient_accumulate_every windows: 32 × 2 in the paper)")


def register_configs() -> None:
    """Register the schemas so YAML files are type-checked (``train_schema`` / ``plan_schema`` in defaults lists)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="plan_schema", node=PlanConfig)
