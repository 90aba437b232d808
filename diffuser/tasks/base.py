"""The task protocol: everything train.py and plan.py need that differs between env families.

One subclass per family (``maze2d.py``, ``locomotion.py``) makes the env, finds (or generates) the dataset, draws the
training-time picture of sampled plans, builds the planner, runs the episodes, writes the report and computes the
normalized score. The entry points call these methods in a straight line and never branch on the family. Tasks are
the composition layer: like the entry points, they read the typed config dataclasses and hand plain typed arguments
to the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium
import numpy as np
import torch
from torch import nn

from diffuser.config import EnvConfig, PlanConfig
from diffuser.data.d4rl import DatasetNotFoundError, find_dataset, load_d4rl
from diffuser.data.minari import is_minari, load_for_env
from diffuser.data.preprocess import preprocess
from diffuser.data.sequence import GoalDataset, SequenceDataset, TransitionDataset, ValueDataset
from diffuser.planning.plan import Planner
from diffuser.runs.build import MODEL_KINDS
from diffuser.runs.load import Run, check_env_dims, find_latest_run, load_run
from diffuser.runs.logger import Logger

SampleFn = Callable[[nn.Module, int], None]  # (EMA model, step) → logs a picture of sampled plans


@dataclass
class Evaluation:
    """What plan.py evaluates: the run (and value run, and critic run), one env per episode, the planner, and how
    scores are taken (gym_version and reference scores: a run on non-D4RL data brings its own)."""

    run: Run
    value: Run | None
    envs: list[gymnasium.Env]
    planner: Planner
    gym_version: str
    reference: dict | None = None
    critic: Run | None = None


def build_dataset(data: dict[str, np.ndarray], env: EnvConfig, *, horizon: int, kind: str) -> SequenceDataset:
    """ValueDataset for value models; GoalDataset or SequenceDataset for diffusion models; horizon-1 windows for BC,
    two-row windows for inverse dynamics; transitions (s, a, r, s', d) for IQL."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind '{kind}'; valid: {list(MODEL_KINDS)}")
    if env.stride != 1 and not (kind == "diffusion" and env.goal_conditioned):
        raise ValueError(
            f"env.stride: {env.stride} is for Maze2D diffusion runs (goal-conditioned, plans tracked by a controller); "
            "locomotion and value/BC/IQL/inverse-dynamics runs execute every step: use env.stride=1"
        )
    cls, extra = SequenceDataset, {}
    if kind in ("iql", "dynamics"):
        cls = TransitionDataset
    elif kind == "value":
        cls, extra = ValueDataset, {"targets": env.value_targets}
    elif kind == "diffusion" and env.goal_conditioned:
        cls = GoalDataset
    return cls(
        data,
        **extra,
        horizon={"bc": 1, "invdyn": 2}.get(kind, horizon),  # IQL and dynamics: always two rows
        normalizer=env.normalizer,
        max_path_length=env.max_path_length,
        use_padding=env.use_padding,
        termination_penalty=env.termination_penalty,
        drop_last_transition=env.drop_last_transition,
        discount=env.discount,
        stride=env.stride,
    )


def sample_plans(model: nn.Module, dataset: SequenceDataset, n_samples: int, seed: int) -> np.ndarray:
    """Plans sampled from the conditions (start, and goal for Maze2D) of random dataset windows, with the model the
    trainer passes (its EMA copy): unnormalized observations (n_samples, H, observation_dim)."""
    idx = np.random.default_rng(seed).choice(len(dataset), n_samples)
    device = next(model.parameters()).device
    batch = dataset.get_batch(idx).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    trajectories = model.conditional_sample(batch.conditions, generator=generator).trajectories
    return model.unnormalize(trajectories)[..., model.action_dim :].cpu().numpy()


class Task:
    """An env family, for the env (dataset) ``name``."""

    def __init__(self, name: str):
        self.name = name

    # ------------------------------------------------------------------ data
    def check_training(self, env: EnvConfig, horizon: int) -> None:
        """Refuse, before any data are read, a training horizon the family's planner cannot use (default: none)."""

    def how_to_make_dataset(self) -> str:
        """The command that makes a missing dataset (shown in the error)."""
        raise NotImplementedError

    def generate_dataset(self, env: EnvConfig) -> Path | None:
        """Generate a missing dataset where the family can (None: it cannot, the error stands)."""
        return None

    def load_data(self, env: EnvConfig) -> tuple[dict[str, np.ndarray], Path]:
        """Find (or generate) the env's dataset, load and preprocess it.

        ``env.dataset=minari:<id>`` reads a Minari dataset from the local store instead (diffuser/data/minari.py).
        """
        name = env.dataset or env.name
        if is_minari(name):
            data, info = load_for_env(name, env.name)
            return preprocess(data, env.preprocess, env.name), info.path
        try:
            path = find_dataset(name, how_to_make=self.how_to_make_dataset())
        except DatasetNotFoundError:
            path = self.generate_dataset(env)
            if path is None:
                raise
        return preprocess(load_d4rl(path), env.preprocess, env.name), Path(path)

    # ------------------------------------------------------------------ training
    def sample_fn(
        self, dataset: SequenceDataset, logger: Logger, run_dir: Path, *, gym_version: str, n_samples: int, seed: int
    ) -> SampleFn | None:
        """The trainer's every-sample_freq picture of plans sampled by a diffusion model (None: no picture)."""
        return None

    # ------------------------------------------------------------------ evaluation
    def load_runs(self, config: PlanConfig, device: torch.device) -> tuple[Run, Run | None]:
        """The run to evaluate (config.diffusion_run, else the newest of exp_name) and its value run (None here)."""
        run_path = config.diffusion_run or find_latest_run(config.runs_root, self.name, config.exp_name)
        run = load_run(run_path, device, config.checkpoint)
        print(f"run: {run_path}")
        return run, None

    def load_critic(self, config: PlanConfig, run: Run, device: torch.device) -> Run | None:
        """A critic run that ranks ``run``'s plans (locomotion: IQL), checked against it; None here."""
        return None

    def evaluation_settings(self, run: Run, config: PlanConfig) -> tuple[str, dict | None]:
        """(gym_version, reference scores or None for the family's own) to evaluate ``run`` with: a run trained on
        non-D4RL data (Minari mujoco/*) brings its env version and reference scores (its config.yaml)."""
        from diffuser.envs import evaluation_settings

        return evaluation_settings(run.config, self.name, config.env.gym_version)

    def make_envs(self, config: PlanConfig, gym_version: str) -> list[gymnasium.Env]:
        """One env per episode."""
        raise NotImplementedError

    def build_planner(self, run: Run, value: Run | None, config: PlanConfig, critic: Run | None = None) -> Planner:
        """The planner for ``run``; bad planner options are refused here, before anything is written."""
        raise NotImplementedError

    def setup(self, config: PlanConfig, device: torch.device) -> Evaluation:
        """Runs, envs and planner, checked against each other (raises on bad input before anything is written)."""
        run, value = self.load_runs(config, device)
        critic = self.load_critic(config, run, device)
        gym_version, reference = self.evaluation_settings(run, config)
        envs = self.make_envs(config, gym_version)
        check_env_dims(envs[0], run.config["dims"], run.path)
        planner = self.build_planner(run, value, config, critic)
        return Evaluation(run, value, envs, planner, gym_version, reference, critic)

    def run_episodes(self, evaluation: Evaluation, config: PlanConfig) -> Any:
        """Play config.planner.n_episodes episodes (episode i reset with seed + i); returns the family's results."""
        raise NotImplementedError

    def write_report(
        self, out_dir: Path, results: Any, evaluation: Evaluation, config: PlanConfig, logger: Logger
    ) -> dict[str, float]:
        """results.json, config.yaml, media and W&B scalars; returns the summary (mean ± s.e.)."""
        raise NotImplementedError

    def normalized_score(self, episode_return: float, reference: dict | None = None) -> float:
        """D4RL normalized score as a fraction (0 = random reference, 1 = expert reference); ×100 to report."""
        from diffuser.envs import normalized_score

        return normalized_score(self.name, episode_return, reference=reference)
