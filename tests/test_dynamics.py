"""The forward dynamics model, the env's termination rule on observations, and the rollout critic, by hand."""

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.baselines.dynamics import ForwardDynamics
from diffuser.baselines.iql import IQL
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.envs.locomotion import healthy, make_locomotion_env
from diffuser.planning.critics import RolloutCritic, check_critic


def linear(weights: list[list[float]], bias: list[float]) -> nn.Sequential:
    layer = nn.Linear(len(weights[0]), len(weights))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights))
        layer.bias.copy_(torch.tensor(bias))
    return nn.Sequential(layer)


def test_dynamics_losses_by_hand():
    # rows [a, s0, s1]; the network's outputs (Δs0, Δs1, r) = (a, s1, 2)
    model = ForwardDynamics(IdentityNormalizer(3), observation_dim=2, action_dim=1, hidden_dim=4)
    model.net = linear([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0, 2.0])  # input [s0, s1, a]
    x = torch.tensor([
        [[1.0, 0.0, 1.0], [0.0, 2.0, 2.0]],  # a 1, s (0, 1): ŝ' = (0 + 1, 1 + 1) = (1, 2), s' (2, 2): errors (−1, 0)
        [[3.0, 1.0, 0.0], [0.0, 9.0, 9.0]],  # terminal: its s' is padding, only the reward counts
    ])
    batch = Batch(x, {}, rewards=torch.tensor([2.0, 5.0]), terminals=torch.tensor([0.0, 1.0]))
    loss, info = model(batch)
    state = ((1.0 + 0.0) / 2 + 0.0) / 2  # squared errors' mean over dims; the terminal row masked; over the batch
    reward = ((2 - 2) ** 2 + (2 - 5) ** 2) / 2
    assert info["state_loss"].item() == pytest.approx(state)
    assert info["reward_loss"].item() == pytest.approx(reward)
    assert loss.item() == pytest.approx(state + reward)


@pytest.mark.parametrize("name", ["hopper-medium-v2", "walker2d-medium-v2"])
def test_the_termination_rule_on_observations_is_the_envs_own(name):
    env = make_locomotion_env(name).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    observations, ended = [], []
    for _ in range(400):  # heights and angles around the start, on both sides of the limits
        qpos = env.init_qpos + rng.normal(0.0, 0.3, env.model.nq) * np.r_[0.0, 2.0, 1.0, np.ones(env.model.nq - 3)]
        env.set_state(qpos, rng.normal(0.0, 1.0, env.model.nv))
        observations.append(env._get_obs())
        ended.append(bool(env.terminated))
    observations, ended = np.array(observations), np.array(ended)
    assert 50 < ended.sum() < 350  # both outcomes are tested
    np.testing.assert_array_equal(healthy(name, observations), ~ended)
    np.testing.assert_array_equal(healthy(name, torch.as_tensor(observations)).numpy(), ~ended)


def test_halfcheetah_never_ends():
    assert healthy("halfcheetah-medium-v2", np.array([[-50.0, 50.0] + [1e3] * 15])).all()


def rollout_critic(steps=None) -> RolloutCritic:
    """Hopper rule on observations (z, angle); dynamics Δz = a, Δangle = 0, r̂ = 1; IQL V(s) = 10 z, γ 0.5."""
    dynamics = ForwardDynamics(IdentityNormalizer(3), observation_dim=2, action_dim=1, hidden_dim=4)
    dynamics.net = linear([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 0.0, 1.0])  # input [z, angle, a]
    iql = IQL(IdentityNormalizer(3), observation_dim=2, action_dim=1, hidden_dim=4, discount=0.5)
    iql.v = linear([[10.0, 0.0]], [0.0])
    return RolloutCritic(dynamics, iql, IdentityNormalizer(3), lambda o: healthy("hopper-medium-v2", o), steps)


def test_rollout_critic_by_hand():
    # rows [a, z, angle]; only s_0 and the actions are read: the planned states after s_0 are junk on purpose
    plans = torch.tensor([
        [[0.1, 1.0, 0.0], [0.1, 9.0, 9.0], [0.1, -9.0, 9.0]],  # z 1.1, 1.2, 1.3: alive; 1 + ½ + ¼ + ⅛·V(1.3)
        [[-0.2, 1.0, 0.0], [-0.2, 9.0, 9.0], [0.5, 9.0, 9.0]],  # z 0.8, then 0.6 < 0.7 falls: 1 + ½, nothing after
    ])
    t = torch.zeros(2, dtype=torch.long)
    np.testing.assert_allclose(rollout_critic()(plans, t).squeeze(-1).detach().numpy(), [1.75 + 0.125 * 13.0, 1.5], rtol=1e-6)
    # one step: 1 + ½·V(ŝ_1) = 1 + ½·11; 1 + ½·V(0.8) = 1 + 4
    np.testing.assert_allclose(rollout_critic(steps=1)(plans, t).squeeze(-1).detach().numpy(), [6.5, 5.0], rtol=1e-6)


def test_rollout_critic_guides_through_the_actions():
    # J of the first plan = 1.75 + ⅛·10·(1 + a_0 + a_1 + a_2): ∂J/∂a_h = 1.25, and nothing reaches the later states
    plans = torch.tensor([[[0.1, 1.0, 0.0], [0.1, 1.1, 0.0], [0.1, 1.2, 0.0]]])
    value, grad = ValueGuide(rollout_critic()).gradients(plans, torch.zeros(1, dtype=torch.long))
    np.testing.assert_allclose(grad[0, :, 0].numpy(), [1.25, 1.25, 1.25], rtol=1e-5)
    np.testing.assert_allclose(grad[0, 1:, 1:].numpy(), 0.0)
    assert value.item() == pytest.approx(1.75 + 0.125 * 13.0)


def test_rollout_is_a_critic_name_and_bad_steps_are_refused():
    check_critic("rollout", "planner.select")
    with pytest.raises(ValueError, match="steps=0"):
        rollout_critic(steps=0)


def test_a_dynamics_run_of_another_kind_is_one_clear_error():
    from diffuser.runs.load import Run, check_critic_compatible

    config = {"model": {"kind": "iql"}, "env": {"name": "hopper-medium-v2", "dataset": None, "normalizer": "gaussian"},
              "dims": {"observation_dim": 2, "action_dim": 1, "transition_dim": 3}}
    diffusion = Run("runs/d", {**config, "model": {"kind": "diffusion"}}, nn.Module(), 1, None)
    with pytest.raises(ValueError, match="holds a 'iql' model, not a forward dynamics model.*locomotion_dynamics"):
        check_critic_compatible(diffusion, Run("runs/x", config, nn.Module(), 1, None), kind="dynamics",
                                what="dynamics run")
