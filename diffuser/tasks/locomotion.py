"""Locomotion (Hopper, Walker2d, HalfCheetah under D4RL names): receding-horizon control with value guidance, or
a BC run through the same loop.

Data are collected beforehand (``python -m diffuser.tools.collect``) or brought as D4RL-layout files; evaluation
replans every env step for all episodes in one call and executes each episode's best plan's first action.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gymnasium
import torch

from diffuser.baselines.dynamics import ForwardDynamics
from diffuser.baselines.inverse_dynamics import InverseDynamics
from diffuser.config import PlanConfig
from diffuser.data.sequence import SequenceDataset
from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.schedulers import make_scheduler
from diffuser.envs.locomotion import healthy
from diffuser.planning.policy import PolicyPlanner
from diffuser.planning.episodes import LocomotionResults, run_locomotion_episodes
from diffuser.planning.critics import NEEDS_IQL, IQLPlanCritic, RolloutCritic, check_critic
from diffuser.planning.guided import GuidedPlanner
from diffuser.planning.plan import Planner
from diffuser.planning.report import write_locomotion_report
from diffuser.runs.load import Run, check_compatible, check_critic_compatible, find_latest_run, load_run
from diffuser.runs.logger import Logger
from diffuser.tasks.base import Evaluation, SampleFn, Task, sample_plans


class LocomotionTask(Task):
    """hopper / walker2d / halfcheetah - <level> - v2 (D4RL names), in gymnasium's MuJoCo envs."""

    def how_to_make_dataset(self) -> str:
        return (f"python -m diffuser.tools.collect --dataset {self.name}, or bring a D4RL-layout HDF5 file "
                "and pass env.dataset=/path/to/file.hdf5")

    def sample_fn(
        self, dataset: SequenceDataset, logger: Logger, run_dir: Path, *, gym_version: str, n_samples: int, seed: int
    ) -> SampleFn | None:
        """Every call samples plans from the first states of random windows and logs their MuJoCo composites, one row
        per plan. None (with a warning) when MuJoCo cannot render here, so training goes on without pictures."""
        from diffuser.utils.rendering import LocomotionRenderer, save_image, stack_images

        try:
            renderer = LocomotionRenderer.for_env(self.name, gym_version)
        except Exception as error:  # no OpenGL backend: mujoco raises from its own GL loaders
            print(f"warning: sampled plans will not be rendered ({type(error).__name__}: {error}); "
                  "set MUJOCO_GL=egl or MUJOCO_GL=osmesa for offscreen rendering")
            return None

        def sample(model, step: int) -> None:
            observations = sample_plans(model, dataset, n_samples, seed + step)
            image = stack_images([renderer.composite(o, every=max(1, len(o) // 8)) for o in observations])
            save_image(Path(run_dir) / "media" / f"samples_{step:07d}.png", image)
            logger.log_image("media/plan", image, step)

        return sample

    def load_runs(self, config: PlanConfig, device: torch.device) -> tuple[Run, Run | None]:
        """The diffusion (or BC / IQL) run and, for a diffusion run whose guide or selection uses the value UNet, its
        value run: value_run, else the newest value run trained beside the default diffusion run (exp_name +
        "_value")."""
        run, _ = super().load_runs(config, device)
        if run.config["model"]["kind"] != "diffusion" or "value" not in critics_used(config):
            return run, None
        value_path = config.value_run or find_latest_run(
            config.runs_root, self.name, f"{config.exp_name}_value", argument="value_run"
        )
        value = load_run(value_path, device)
        check_compatible(run, value, config.env.discount)
        print(f"value run: {value_path}")
        print(f"guide: scale {config.guide.scale}, t_stopgrad {config.guide.t_stopgrad}")
        return run, value

    def load_critic(self, config: PlanConfig, run: Run, device: torch.device) -> Run | None:
        """The IQL run whose critic guides or ranks the plans (critic_run, else the newest runs/<env>/iql/ run),
        checked against the diffusion run; None when no critic that reads one is asked for."""
        if run.config["model"]["kind"] != "diffusion" or not set(critics_used(config)) & set(NEEDS_IQL):
            return None
        try:
            path = config.critic_run or find_latest_run(config.runs_root, self.name, "iql", argument="critic_run")
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{error}. The IQL critic comes from `python train.py experiment=locomotion_iql env.name={self.name}` "
                "(about 15 minutes on 2 cores); without one, plan with planner.select=value guide.critic=value"
            ) from None
        critic = load_run(path, device)
        check_critic_compatible(run, critic)
        print(f"critic run: {path}")
        return critic

    def make_envs(self, config: PlanConfig, gym_version: str) -> list[gymnasium.Env]:
        """One env per episode; the first renders (rgb_array) when the planner records a video."""
        from diffuser.envs.locomotion import make_locomotion_env

        return [make_locomotion_env(self.name, gym_version, **({"render_mode": "rgb_array"} if i == 0 and
                                                                 config.planner.video else {}))
                for i in range(config.planner.n_episodes)]

    def build_planner(self, run: Run, value: Run | None, config: PlanConfig, critic: Run | None = None) -> Planner:
        """PolicyPlanner for a BC or IQL run; else GuidedPlanner (unguided with guide=none), guided by
        guide.critic and ranking by planner.select. Bad planner options (steps out of range) are refused here."""
        if run.config["model"]["kind"] in ("bc", "iql"):
            return PolicyPlanner(run.model)
        g, p = config.guide, config.planner
        check_critic(g.critic, "guide.critic")
        if p.select is not None:
            check_critic(p.select, "planner.select")

        def make_critic(name: str) -> ValueGuide:
            if name == "value":
                return ValueGuide(value.model.model)
            if name == "rollout":
                return ValueGuide(RolloutCritic(self.load_dynamics(config, run), critic.model, run.model.normalizer,
                                                partial(healthy, self.name)))
            return ValueGuide(IQLPlanCritic(critic.model, run.model.normalizer, name))

        guide = make_critic(g.critic) if g.kind == "value" else None
        selector = make_critic(p.select) if p.select is not None and (guide is None or p.select != g.critic) else None
        return GuidedPlanner(
            run.model, guide,
            batch_size=p.batch_size, scale=g.scale, n_guide_steps=g.n_guide_steps, t_stopgrad=g.t_stopgrad,
            scale_grad_by_std=g.scale_grad_by_std, scheduler=make_scheduler(p.scheduler, p.n_sample_steps, p.eta),
            warm_start_steps=p.warm_start_steps, bf16=p.bf16, selector=selector, fresh_candidates=p.fresh_candidates,
            fresh_scheduler=make_scheduler("ddim", p.fresh_steps, 0.0) if p.fresh_candidates else None,
            compile=p.compile, inverse_dynamics=self.load_inverse_dynamics(config, run),
        )

    def load_inverse_dynamics(self, config: PlanConfig, run: Run) -> InverseDynamics | None:
        """With planner.inverse_dynamics: the inverse_dynamics_run's model (else the newest runs/<env>/invdyn/ run),
        checked against the diffusion run."""
        if not config.planner.inverse_dynamics:
            return None
        path = config.inverse_dynamics_run or find_latest_run(config.runs_root, self.name, "invdyn",
                                                              argument="inverse_dynamics_run")
        invdyn = load_run(path, next(run.model.parameters()).device)
        check_critic_compatible(run, invdyn, kind="invdyn", what="inverse dynamics run")
        print(f"inverse dynamics run: {path}")
        return invdyn.model

    def dynamics_path(self, config: PlanConfig) -> Path | None:
        """The rollout critic's dynamics run: dynamics_run, else the newest runs/<env>/dynamics/ run; None when the
        rollout critic is not asked for."""
        if "rollout" not in critics_used(config):
            return None
        try:
            return Path(config.dynamics_run or find_latest_run(config.runs_root, self.name, "dynamics",
                                                               argument="dynamics_run"))
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{error}. The rollout critic's dynamics model comes from `python train.py "
                f"experiment=locomotion_dynamics env.name={self.name}` (about 10 minutes on one core)") from None

    def load_dynamics(self, config: PlanConfig, run: Run) -> ForwardDynamics:
        """The rollout critic's forward dynamics model, checked against the diffusion run."""
        path = self.dynamics_path(config)
        dynamics = load_run(path, next(run.model.parameters()).device)
        check_critic_compatible(run, dynamics, kind="dynamics", what="dynamics run")
        print(f"dynamics run: {path}")
        return dynamics.model

    def run_episodes(self, evaluation: Evaluation, config: PlanConfig) -> LocomotionResults:
        return run_locomotion_episodes(
            evaluation.envs, evaluation.planner, partial(self.normalized_score, reference=evaluation.reference),
            seed=config.seed, max_episode_steps=config.planner.max_episode_steps or 1000,
            render_first=config.planner.video,
        )

    def write_report(
        self, out_dir: Path, results: LocomotionResults, evaluation: Evaluation, config: PlanConfig, logger: Logger
    ) -> dict[str, float]:
        return write_locomotion_report(
            out_dir, results, config, evaluation.run, evaluation.value, logger, gym_version=evaluation.gym_version,
            critic_run=evaluation.critic, dynamics_run=self.dynamics_path(config),
        )


def critics_used(config: PlanConfig) -> list[str]:
    """The critics a locomotion plan config asks for: the guide's (guide=value) and the selection's."""
    guide = [config.guide.critic] if config.guide.kind == "value" else []
    return guide + ([config.planner.select] if config.planner.select is not None else [])
