"""IQL (baselines/iql.py), its transitions (TransitionDataset) and the critics that rank plans (planning/critics.py):
losses, targets, policies and critic values worked by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.baselines.bc import MLPPolicy
from diffuser.baselines.iql import IQL, expectile_loss
from diffuser.data.sequence import TransitionDataset
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.guidance import ValueGuide
from diffuser.diffusion.normalization import GaussianNormalizer, IdentityNormalizer
from diffuser.diffusion.schedulers import DDIMScheduler
from diffuser.models import TemporalUnet
from diffuser.planning.critics import IQLPlanCritic, check_critic
from diffuser.planning.guided import GuidedPlanner
from diffuser.planning.policy import PolicyPlanner


def constant(net: nn.Sequential, value: float) -> None:
    """Make an MLP output ``value`` everywhere: its last layer's weights 0, bias value."""
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.fill_(value)


def linear(weights: list[float], bias: float = 0.0) -> nn.Sequential:
    layer = nn.Linear(len(weights), 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
        layer.bias.fill_(bias)
    return nn.Sequential(layer)


def test_expectile_loss_by_hand():
    # u = 1 weighs τ = 0.7, u = −2 weighs 1 − τ = 0.3: (0.7·1 + 0.3·4) / 2 = 0.95.
    assert expectile_loss(torch.tensor([1.0, -2.0]), 0.7).item() == pytest.approx(0.95)


def test_the_three_losses_by_hand():
    iql = IQL(IdentityNormalizer(2), observation_dim=1, action_dim=1, hidden_dim=4, discount=0.5, expectile=0.7,
              beta=2.0)
    for net, value in ((iql.v, 1.0), (iql.target_q1, 3.0), (iql.target_q2, 2.0), (iql.q1, 0.0), (iql.q2, 1.0),
                       (iql.policy, 0.0)):
        constant(net, value)
    # rows [a, s]: transitions (s, a) = (5, 0) and (6, 1), next states 7 and 8; rewards 1 and 2, the second terminal
    batch = Batch(torch.tensor([[[0.0, 5.0], [0.0, 7.0]], [[1.0, 6.0], [0.0, 8.0]]]), {},
                  rewards=torch.tensor([1.0, 2.0]), terminals=torch.tensor([0.0, 1.0]))
    loss, info = iql(batch)
    # V: target Q = min(3, 2) = 2, u = 2 − 1 = 1 ≥ 0, so L_V = 0.7.
    assert float(info["v_loss"]) == pytest.approx(0.7)
    # Q: TD targets 1 + 0.5·1·V(7) = 1.5 and 2 + 0 = 2; Q1 ≡ 0: (1.5² + 2²)/2 = 3.125, Q2 ≡ 1: (0.25 + 1)/2 = 0.625.
    assert float(info["q_loss"]) == pytest.approx(0.5 * (3.125 + 0.625))
    # π: A = 2 − 1 = 1, weight e²; N(0, 1) log-densities −½log 2π and −½ − ½log 2π.
    expected_policy = -math.exp(2.0) * (-0.5 * math.log(2 * math.pi) - 0.25)
    assert float(info["policy_loss"]) == pytest.approx(expected_policy, rel=1e-5)
    assert loss.item() == pytest.approx(0.7 + 1.875 + expected_policy, rel=1e-5)


def test_advantage_weights_are_clamped_at_100():
    iql = IQL(IdentityNormalizer(2), observation_dim=1, action_dim=1, hidden_dim=4, beta=10.0)
    for net, value in ((iql.v, 0.0), (iql.target_q1, 5.0), (iql.target_q2, 5.0), (iql.policy, 0.0)):
        constant(net, value)
    batch = Batch(torch.zeros(1, 2, 2), {}, rewards=torch.zeros(1), terminals=torch.zeros(1))
    # exp(10·5) clamps to 100; log N(0 | 0, 1) = −½log 2π
    assert float(iql(batch)[1]["policy_loss"]) == pytest.approx(100 * 0.5 * math.log(2 * math.pi), rel=1e-5)


def test_polyak_update_of_the_target_networks_by_hand():
    iql = IQL(IdentityNormalizer(2), observation_dim=1, action_dim=1, hidden_dim=4, target_update=0.25)
    constant(iql.q1, 4.0)
    constant(iql.target_q1, 0.0)
    iql.update_targets()
    assert iql.target_q1[-1].bias.item() == pytest.approx(1.0)  # 0.75·0 + 0.25·4
    assert not any(p.requires_grad for p in iql.target_q1.parameters())


def test_bad_iql_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="iql.expectile=1.5"):
        IQL(IdentityNormalizer(2), observation_dim=1, action_dim=1, expectile=1.5)
    with pytest.raises(ValueError, match="env.discount=1.0"):
        IQL(IdentityNormalizer(2), observation_dim=1, action_dim=1, discount=1.0)


def gaussian_normalizer() -> GaussianNormalizer:
    """Rows [a (1), s (2)] with means (0.5, 1, −2) and stds (2, 4, 0.5)."""
    normalizer = GaussianNormalizer(3)
    normalizer.mean.copy_(torch.tensor([0.5, 1.0, -2.0]))
    normalizer.std.copy_(torch.tensor([2.0, 4.0, 0.5]))
    return normalizer


@pytest.mark.parametrize("kind", ["bc", "iql"])
def test_the_executed_action_is_the_network_output_denormalized_by_hand(kind):
    normalizer = gaussian_normalizer()
    if kind == "bc":
        policy = MLPPolicy(normalizer, observation_dim=2, action_dim=1)
        policy.net = linear([1.0, 2.0], bias=0.5)
    else:
        policy = IQL(normalizer, observation_dim=2, action_dim=1, hidden_dim=4)
        policy.policy = linear([1.0, 2.0], bias=0.5)
    observation = np.array([[5.0, -1.0]])
    # normalized state ((5 − 1)/4, (−1 + 2)/0.5) = (1, 2); network 1·1 + 2·2 + 0.5 = 5.5; action 5.5·2 + 0.5 = 11.5
    plan = PolicyPlanner(policy).plan(observation)
    np.testing.assert_allclose(plan.first_actions, [[11.5]], rtol=1e-6)


def test_transitions_by_hand():
    # Episode 1: 3 steps ending in a terminal (return 1 + 2 + 3 = 6); episode 2: 2 steps, timed out (return 10).
    data = {
        "observations": np.array([[0.0], [1.0], [2.0], [10.0], [11.0]]),
        "actions": np.array([[0.1], [0.2], [0.3], [0.4], [0.5]]),
        "rewards": np.array([1.0, 2.0, 3.0, 4.0, 6.0]),
        "terminals": np.array([0, 0, 1, 0, 0], dtype=bool),
        "timeouts": np.array([0, 0, 0, 0, 1], dtype=bool),
    }
    dataset = TransitionDataset(data, normalizer="identity", max_path_length=10)
    # every row of the terminal episode; the timed-out episode's last row has no next state
    assert len(dataset) == 4
    batch = dataset.get_batch(np.arange(4))
    scale = 1000 / (10 - 6)
    np.testing.assert_allclose(batch.rewards.numpy(), np.array([1.0, 2.0, 3.0, 4.0]) * scale)
    np.testing.assert_array_equal(batch.terminals.numpy(), [0, 0, 1, 0])
    np.testing.assert_allclose(batch.trajectories[:, 0].numpy(), [[0.1, 0.0], [0.2, 1.0], [0.3, 2.0], [0.4, 10.0]])
    np.testing.assert_allclose(batch.trajectories[[0, 1, 3], 1, 1].numpy(), [1.0, 2.0, 11.0])  # s'


def iql_with_linear_critics() -> IQL:
    """V(s) = s_0 + 2 s_1; Q1(s, a) = a + s_0, Q2(s, a) = 3a (identity normalizers: raw = normalized)."""
    iql = IQL(IdentityNormalizer(3), observation_dim=2, action_dim=1, hidden_dim=4)
    iql.v, iql.q1, iql.q2 = linear([1.0, 2.0]), linear([1.0, 1.0, 0.0]), linear([0.0, 0.0, 3.0])
    return iql


def test_iql_plan_critics_by_hand():
    iql = iql_with_linear_critics()
    # one plan of 2 rows [a, s0, s1]: (1, 2, 3) and (5, −1, 1)
    plan = torch.tensor([[[1.0, 2.0, 3.0], [5.0, -1.0, 1.0]]])
    t = torch.zeros(1, dtype=torch.long)
    v_sum = IQLPlanCritic(iql, IdentityNormalizer(3), "iql_v")(plan, t)
    assert v_sum.shape == (1, 1) and v_sum.item() == pytest.approx((2 + 6) + (-1 + 2))  # Σ_h V(s_h) = 8 + 1
    q_first = IQLPlanCritic(iql, IdentityNormalizer(3), "iql_q")(plan, t)
    assert q_first.item() == pytest.approx(min(1 + 2, 3 * 1))  # min(Q1, Q2) at (s_0, a_0) = 3


def test_an_iql_critic_reads_plans_through_both_normalizers():
    iql = iql_with_linear_critics()
    plans = GaussianNormalizer(3)  # the diffusion run's: raw = 2·x + 1 on every dim
    plans.mean.fill_(1.0)
    plans.std.fill_(2.0)
    x = torch.tensor([[[0.0, 0.5, 1.0]]])  # raw row (1, 2, 3): V = 2 + 6
    assert IQLPlanCritic(iql, plans, "iql_v")(x, torch.zeros(1, dtype=torch.long)).item() == pytest.approx(8.0)


def test_a_critic_name_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match="planner.select='iql'.*valid"):
        check_critic("iql", "planner.select")


class Recording(nn.Module):
    """A critic J(τ) = the plan's first action, recording what it scored."""

    def __init__(self):
        super().__init__()
        self.scored = []

    def forward(self, x, t):
        self.scored.append(x.clone())
        return x[:, 0, :1]


def test_selection_ranks_warm_and_fresh_candidates_alike_and_keeps_the_best():
    h, obs, act = 8, 2, 1
    diffusion = GaussianDiffusion(TemporalUnet(horizon=h, transition_dim=obs + act, dim=8, dim_mults=(1, 2)),
                                  IdentityNormalizer(obs + act), horizon=h, observation_dim=obs, action_dim=act,
                                  n_diffusion_steps=5)
    recording = Recording()
    planner = GuidedPlanner(diffusion, None, batch_size=2, selector=ValueGuide(recording), fresh_candidates=3,
                            fresh_scheduler=DDIMScheduler(2))
    observations = np.array([[0.0, 1.0], [2.0, -1.0]])
    plan = planner.plan(observations, generator=torch.Generator().manual_seed(0), env_ids=[0, 1])
    (scored,) = recording.scored
    assert scored.shape == (2 * (2 + 3), h, obs + act)  # per env: 2 from the sampler, 3 fresh
    for env in range(2):
        mine = scored[env * 5 : (env + 1) * 5]
        np.testing.assert_allclose(mine[:, 0, act:].numpy(), np.repeat(observations[env : env + 1], 5, 0))
        assert len({round(float(a), 6) for a in mine[:, 0, 0]}) == 5  # fresh noise: every candidate differs
        best = int(mine[:, 0, 0].argmax())
        np.testing.assert_allclose(plan.actions[env], mine[best, :, :act].numpy(), rtol=1e-6)
        assert plan.values[env] == pytest.approx(float(mine[best, 0, 0]))


def run_of(kind: str, name: str = "hopper-medium-v2", obs: int = 2, mean: float = 0.0):
    from diffuser.runs.load import Run

    normalizer = GaussianNormalizer(obs + 1)
    normalizer.mean.fill_(mean)
    model = IQL(normalizer, observation_dim=obs, action_dim=1, hidden_dim=4) if kind == "iql" else nn.Module()
    model.normalizer = normalizer
    config = {"model": {"kind": kind}, "env": {"name": name, "dataset": None, "normalizer": "gaussian"},
              "dims": {"observation_dim": obs, "action_dim": 1, "transition_dim": obs + 1}}
    return Run(f"runs/{name}/{kind}", config, model, 1, None)


@pytest.mark.parametrize("critic, named", [
    (run_of("iql", name="walker2d-medium-v2"), "env.name=hopper-medium-v2 but critic run .* env.name=walker2d"),
    (run_of("iql", obs=3), "dims="),
    (run_of("iql", mean=1.0), "normalizer statistics 'mean' differ.*different data"),
    (run_of("value"), "critic_run .* holds a 'value' model, not an IQL critic.*experiment=locomotion_iql"),
])
def test_a_critic_run_of_other_data_is_one_clear_error(critic, named):
    from diffuser.runs.load import check_critic_compatible

    with pytest.raises(ValueError, match=named):
        check_critic_compatible(run_of("diffusion"), critic)
    check_critic_compatible(run_of("diffusion"), run_of("iql"))  # the matching pair passes


def test_inverse_dynamics_action_by_hand_and_the_planner_executes_it():
    from diffuser.baselines.inverse_dynamics import InverseDynamics

    f = InverseDynamics(gaussian_normalizer(), observation_dim=2, action_dim=1, hidden_dim=4)
    f.net = linear([1.0, 0.0, 0.0, 1.0])  # normalized a = s_0 + s'_1
    # s (5, −1) → (1, 2); s' (1, −1.5) → (0, 1); a_n = 1 + 1 = 2 → a = 2·2 + 0.5 = 4.5
    action = f.act(torch.tensor([[5.0, -1.0]]), torch.tensor([[1.0, -1.5]]))
    assert action.item() == pytest.approx(4.5)

    h = 8
    diffusion = GaussianDiffusion(TemporalUnet(horizon=h, transition_dim=3, dim=8, dim_mults=(1, 2)),
                                  gaussian_normalizer(), horizon=h, observation_dim=2, action_dim=1,
                                  n_diffusion_steps=3)
    observations = np.array([[5.0, -1.0], [0.0, 1.0]])
    plan = GuidedPlanner(diffusion, None, batch_size=2, inverse_dynamics=f).plan(
        observations, generator=torch.Generator().manual_seed(0))
    # the executed action: 2·(normalized s_0 + normalized ŝ_1, second dim) + 0.5, from the plan's own ŝ_1
    s0 = (observations[:, 0] - 1.0) / 4.0
    s1 = (plan.observations[:, 1, 1] + 2.0) / 0.5
    np.testing.assert_allclose(plan.first_actions[:, 0], 2.0 * (s0 + s1) + 0.5, rtol=1e-5, atol=1e-5)
