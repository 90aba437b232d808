"""One task object per env family, and one protocol for every planner."""

import numpy as np
import pytest
import torch

from diffuser.baselines.bc import MLPPolicy
from diffuser.config import EnvConfig, PlanConfig
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer, make_normalizer
from diffuser.models import TemporalUnet
from diffuser.planning.policy import PolicyPlanner
from diffuser.planning.guided import GuidedPlanner
from diffuser.planning.maze2d import Maze2dPlanner
from diffuser.planning.plan import Plan
from diffuser.tasks import task_for
from diffuser.tasks.locomotion import LocomotionTask
from diffuser.tasks.maze2d import Maze2dTask


@pytest.mark.parametrize("name, cls", [("maze2d-umaze-v1", Maze2dTask), ("maze2d-large-v1", Maze2dTask),
                                       ("hopper-medium-v2", LocomotionTask), ("halfcheetah-medium-expert-v2",
                                                                              LocomotionTask)])
def test_task_for_picks_the_family(name, cls):
    task = task_for(name)
    assert type(task) is cls and task.name == name


def test_each_family_says_how_to_make_its_dataset():
    assert "diffuser.tools.maze2d_generate" in task_for("maze2d-umaze-v1").how_to_make_dataset()
    assert "diffuser.tools.collect" in task_for("hopper-medium-v2").how_to_make_dataset()
    assert task_for("hopper-medium-v2").generate_dataset(EnvConfig(name="hopper-medium-v2")) is None


def test_normalized_score_is_the_d4rl_fraction():
    task = task_for("hopper-medium-v2")
    assert task.normalized_score(-20.272305) == pytest.approx(0.0)
    assert task.normalized_score(3234.3) == pytest.approx(1.0)
    assert task.normalized_score(5.0, reference={"ref_min_score": 0.0, "ref_max_score": 10.0}) == 0.5


def test_maze2d_task_refuses_bad_replanning_options_when_building_the_planner():
    diffusion = GaussianDiffusion(TemporalUnet(horizon=16, transition_dim=6, dim=8, dim_mults=(1, 2)),
                                  IdentityNormalizer(6), horizon=16, observation_dim=4, action_dim=2,
                                  n_diffusion_steps=3)
    run = type("Run", (), {"model": diffusion})()
    config = PlanConfig()
    config.planner.replan_lag = -1.0
    with pytest.raises(ValueError, match="planner.replan_lag"):
        task_for("maze2d-umaze-v1").build_planner(run, None, config)


def test_every_planner_follows_one_protocol():
    """reset(); plan(N observations) → Plan with (N, H, action_dim) actions and (N, H, observation_dim) observations."""
    obs, act, h = 4, 2, 16
    diffusion = GaussianDiffusion(TemporalUnet(horizon=h, transition_dim=obs + act, dim=8, dim_mults=(1, 2)),
                                  IdentityNormalizer(obs + act), horizon=h, observation_dim=obs, action_dim=act,
                                  n_diffusion_steps=3)
    policy = MLPPolicy(make_normalizer("identity", obs + act), observation_dim=obs, action_dim=act, hidden_dim=8)
    observations, goals = np.zeros((3, obs)), np.ones((3, 2))
    for planner in (Maze2dPlanner(diffusion), GuidedPlanner(diffusion, None, batch_size=2), PolicyPlanner(policy)):
        planner.reset()
        plan = planner.plan(observations, goals, generator=torch.Generator().manual_seed(0), env_ids=[0, 1, 2])
        assert isinstance(plan, Plan) and isinstance(planner.device, torch.device)
        assert plan.actions.shape[::2] == (3, act) and plan.observations.shape[::2] == (3, obs)
        assert plan.first_actions.shape == (3, act) and len(plan.lengths) == 3
