import gymnasium
import numpy as np
import pytest
import torch

import diffuser.envs  # noqa: F401
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import make_normalizer
from diffuser.models import TemporalUnet
from diffuser.planning.maze2d import (
    DT, ClosedLoop, Maze2dPlanner, Plan, dynamic_residual, needs_replan, plan_lengths, run_maze2d_episodes,
    track_waypoint, upsample,
)


def test_tracking_rule_by_hand():
    plan = np.array([[0, 0, 0, 0], [1.0, 2.0, 0.5, -0.5], [3.0, 3.0, 1.0, 1.0]])
    state = np.array([0.5, 1.0, 0.2, 0.1])
    np.testing.assert_allclose(track_waypoint(plan, 0, state), [0.5 + 0.3, 1.0 - 0.6])
    # Past the plan's end: the last planned position, at rest.
    np.testing.assert_allclose(track_waypoint(plan, 2, state), [2.5 - 0.2, 2.0 - 0.1])


def test_faster_tracking_by_hand():
    plan = np.array([[0, 0, 0, 0], [1.0, 2.0, 0.5, -0.5], [3.0, 3.0, 1.0, 1.0]])
    state = np.array([0.5, 1.0, 0.2, 0.1])
    # speed 1.5 at t = 0: the plan at step 1.5, halfway between its steps 1 and 2: position (2, 2.5), velocity
    # (0.75, 0.25) times 1.5 = (1.125, 0.375).
    np.testing.assert_allclose(track_waypoint(plan, 0, state, speed=1.5), [1.5 + 0.925, 1.5 + 0.275])
    # At t = 1 it asks for step 3, past the end: the last position at rest.
    np.testing.assert_allclose(track_waypoint(plan, 1, state, speed=1.5), [2.5 - 0.2, 2.0 - 0.1])


def test_tracking_gains_by_hand():
    plan = np.array([[0, 0, 0, 0], [1.0, 2.0, 0.5, -0.5], [3.0, 3.0, 1.0, 1.0]])
    state = np.array([0.5, 1.0, 0.2, 0.1])
    # position error (0.5, 1.0) and velocity error (0.3, -0.6), as above: 2·(0.5, 1.0) + 0.5·(0.3, -0.6)
    np.testing.assert_allclose(track_waypoint(plan, 0, state, gains=(2.0, 0.5)), [1.0 + 0.15, 2.0 - 0.3])


def make_planner(horizon=16):
    normalizer = make_normalizer("limits", 6).fit(np.array([[-1, -1, 0, 0, -5, -5], [1, 1, 4, 4, 5, 5]]))
    torch.manual_seed(0)
    net = TemporalUnet(horizon=horizon, transition_dim=6, dim=8, dim_mults=(1, 2))
    diffusion = GaussianDiffusion(net, normalizer, horizon=horizon, observation_dim=4, action_dim=2,
                                  n_diffusion_steps=4, clip_denoised=True)
    return Maze2dPlanner(diffusion)


def test_plans_start_at_the_state_and_end_at_the_goal():
    planner = make_planner()
    starts = np.array([[1.0, 1.0, 0.1, -0.2], [3.0, 2.0, 0.0, 0.3]])
    goals = np.array([[3.0, 3.0], [1.0, 1.0]])
    plan = planner.plan(starts, goals, torch.Generator().manual_seed(0))
    assert plan.observations.shape == (2, 16, 4) and plan.actions.shape == (2, 16, 2)
    np.testing.assert_allclose(plan.observations[:, 0], starts, atol=1e-5)
    np.testing.assert_allclose(plan.observations[:, -1, :2], goals, atol=1e-5)
    np.testing.assert_allclose(plan.observations[:, -1, 2:], 0, atol=1e-5)


class StraightLinePlanner(Maze2dPlanner):
    """Plans a straight line to the goal: in the open part of U-Maze's top corridor tracking it must score."""

    def plan(self, observations, goals, generator=None):
        alphas = np.linspace(0, 1, self.horizon)[None, :, None]
        xy = observations[:, None, :2] * (1 - alphas) + goals[:, None, :] * alphas
        velocity = np.gradient(xy, axis=1) / 0.01  # dt of the point mass
        return Plan(np.zeros((len(goals), self.horizon, 2)), np.concatenate([xy, velocity], -1))


class CorridorStart(gymnasium.Wrapper):
    """Starts every episode at rest in U-Maze's top corridor, two cells right of the goal (1, 1)."""

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        self.env.unwrapped.set_state(np.array([1.0, 3.0]), np.zeros(2))
        return np.array([1.0, 3.0, 0.0, 0.0]), info


def test_episode_runner_scores_a_competent_plan_and_runs_episodes_together():
    envs = [CorridorStart(gymnasium.make("maze2d-umaze-v1")) for _ in range(3)]
    planner = StraightLinePlanner(make_planner().diffusion, horizon=80)
    results = run_maze2d_episodes(envs, planner, seed=10)
    assert results.seeds == [10, 11, 12] and results.lengths.tolist() == [300] * 3
    assert (results.returns > 220).all()  # within 0.5 of the goal after ~60 of the 80 planned steps, then stays
    assert results.normalized_scores == pytest.approx(100 * (results.returns - 23.85) / (161.86 - 23.85))
    summary = results.summary()
    assert summary["n_episodes"] == 3 and summary["normalized_score_se"] >= 0


# ------------------------------------------------------------------ closed loop


def test_dynamic_residual_by_hand():
    """A plan whose positions follow its velocities has residual 0; a jump of length L inside it gives L / (w dt)."""
    dt, w, speed = 0.01, 8, 2.0
    t = np.arange(40)
    xy = np.stack([1.0 + speed * dt * t, np.full(40, 2.0)], -1)
    velocity = np.tile([speed, 0.0], (40, 1))
    plan = np.concatenate([xy, velocity], -1)[None]
    assert dynamic_residual(plan, window=w, dt=dt) == pytest.approx([0.0], abs=1e-9)
    jumped = plan.copy()
    jumped[0, 20:, 1] += 0.3  # a sideways jump of 0.3 between steps 19 and 20 that no velocity explains
    assert dynamic_residual(jumped, window=w, dt=dt) == pytest.approx([0.3 / (w * dt)])
    # The velocity at step s moves the position from s − 1 to s (semi-implicit Euler): shifting velocities by one
    # step on a plan that speeds up leaves a residual.
    accelerating = np.concatenate([np.cumsum(np.cumsum(np.ones((1, 40, 2)) * dt, 1) * dt, 1),
                                   np.cumsum(np.ones((1, 40, 2)) * dt, 1)], -1)
    assert dynamic_residual(accelerating, window=w, dt=dt) == pytest.approx([0.0], abs=1e-9)
    lagged = accelerating.copy()
    lagged[0, 1:, 2:] = accelerating[0, :-1, 2:]
    assert dynamic_residual(lagged, window=w, dt=dt)[0] == pytest.approx(np.hypot(dt, dt))


class ScriptedHorizonPlanner(Maze2dPlanner):
    """Samples that jump by ``jump[i]`` at their middle unless their horizon reaches ``needs[i]`` (episode i)."""

    def __init__(self, diffusion, loop, needs):
        super().__init__(diffusion, loop)
        self.needs, self.calls = np.asarray(needs), []

    def _sample(self, observations, goals, horizon, generator):
        self.calls.append((len(observations), horizon))
        n, k = len(self.needs), self.loop.n_candidates
        samples = np.zeros((n * k, horizon, 6))
        samples[:, :, 2] = np.arange(horizon)  # x counts steps: the rows say which horizon they came from
        samples[:, :, 4] = 1.0 / DT  # and the velocity says so too: consistent
        bad = np.repeat(horizon < self.needs, k)
        samples[bad, horizon // 2 :, 3] += 1.0 + np.arange(bad.sum())[:, None]  # jumps of 1, 2, ... in y
        return samples


def test_planner_keeps_the_shortest_consistent_horizon_and_pads_it():
    diffusion = make_planner().diffusion
    planner = ScriptedHorizonPlanner(diffusion, ClosedLoop(horizons=(16, 8), max_residual=1.0), needs=[8, 16, 40])
    plan = planner.plan(np.zeros((3, 4)), np.zeros((3, 2)))
    assert planner.calls == [(3, 8), (3, 16)]  # shortest first, all episodes in one call per horizon
    assert plan.lengths.tolist() == [8, 16, 16]  # episode 2 is consistent at no horizon: its least bad sample
    assert plan.observations.shape == (3, 16, 4)
    np.testing.assert_allclose(plan.path(0)[:, 0], np.arange(8))
    np.testing.assert_allclose(plan.observations[0, 8:], np.tile(plan.observations[0, 7], (8, 1)))  # padded
    assert plan.observations[2, -1, 1] > 0  # episode 2 keeps a jumping plan (the lesser of its two jumps)


def test_paper_planner_is_one_sample_of_the_training_horizon():
    planner = make_planner()
    plan = planner.plan(np.zeros((2, 4)), np.ones((2, 2)), torch.Generator().manual_seed(0))
    again = make_planner().diffusion
    normed = again.conditional_sample(
        {0: again.normalize_observation(torch.zeros(2, 4)),
         15: again.normalize_observation(torch.tensor([[1.0, 1.0, 0, 0]] * 2))},
        generator=torch.Generator().manual_seed(0),
    )
    np.testing.assert_allclose(plan.observations, again.unnormalize(normed.trajectories)[..., 2:].numpy(), atol=1e-6)
    assert plan.lengths.tolist() == [16, 16]


@pytest.mark.parametrize("loop, kwargs, message", [
    ({"horizons": (9,)}, {}, "planner.horizons"),  # the test network takes multiples of 2
    ({"horizons": (0,)}, {}, "planner.horizons"),
    ({"n_candidates": 0}, {}, "planner.n_candidates"),
    ({"max_residual": 0.0}, {}, "planner.max_residual"),
    ({}, {"n_sample_steps": 9}, "planner.n_sample_steps"),
    ({"replan_lag": -1.0}, {}, "planner.replan_lag"),
    ({"replan_check_every": 0}, {}, "planner.replan_check_every"),
    ({"track_speed": 0.0}, {}, "planner.track_speed"),
    ({"track_speed": -1.0}, {}, "planner.track_speed"),
    ({"track_speed": 5.0}, {}, "planner.track_speed"),
    ({"track_gains": (0.0, 1.0)}, {}, "planner.track_p_gain and planner.track_d_gain"),
    ({"track_gains": (1.0, -2.0)}, {}, "planner.track_p_gain and planner.track_d_gain"),
    ({"track_gains": (1.0, 25.0)}, {}, "planner.track_p_gain and planner.track_d_gain"),
])
def test_planner_options_out_of_range_are_refused_by_name(loop, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Maze2dPlanner(make_planner().diffusion, ClosedLoop(**loop), **kwargs)


def test_a_new_plan_is_accepted_if_consistent_or_less_inconsistent():
    loop = ClosedLoop(max_residual=1.0)
    assert loop.accepts(0.5, 0.1)  # consistent, though worse than the plan in hand
    assert loop.accepts(3.0, 4.0)  # inconsistent, but less so
    assert not loop.accepts(3.0, 3.0) and not loop.accepts(3.0, 0.5)
    assert not ClosedLoop().replans and ClosedLoop(replan_every=5).replans and ClosedLoop(replan_lag=0.5).replans


def test_needs_replan_by_hand():
    plan = np.array([[0.0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]])
    assert not needs_replan(plan, 2, np.array([2.0, 0.4, 0, 0]), lag=0.5, every=0)  # 0.4 behind: on track
    assert needs_replan(plan, 2, np.array([1.4, 0.0, 0, 0]), lag=0.5, every=0)  # 0.6 behind
    assert needs_replan(plan, 5, np.array([2.0, 0.0, 0, 0]), lag=0.5, every=0)  # used up, 1 short of its end
    assert not needs_replan(plan, 5, np.array([3.2, 0.3, 0, 0]), lag=0.5, every=0)  # used up, at its end
    assert not needs_replan(plan, 2, np.array([1.4, 0.0, 0, 0]), lag=0.0, every=0)  # both off: the paper
    assert needs_replan(plan, 3, np.array([3.0, 0.0, 0, 0]), lag=0.0, every=3)  # 3 steps old
    # Tracked twice as fast, the plan puts the agent at x = 2 after one step.
    assert not needs_replan(plan, 1, np.array([2.0, 0.0, 0, 0]), lag=0.5, every=0, speed=2.0)
    assert needs_replan(plan, 1, np.array([1.0, 0.0, 0, 0]), lag=0.5, every=0, speed=2.0)


CORNERS = np.array([[3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]])  # U-Maze's corridor, start arm to goal


def corridor_plan(start: np.ndarray, speed: float = 3.0) -> np.ndarray:
    """(T, 4) states at constant speed from ``start`` through the corridor corners after the nearest one."""
    nearest = int(np.argmin(np.linalg.norm(CORNERS - start, axis=1)))
    points = np.vstack([start, CORNERS[min(nearest + 1, 3):]])
    path = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / (speed * DT))))
        path.extend(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    xy = np.stack(path)
    velocity = np.vstack([np.zeros(2), np.diff(xy, axis=0) / DT])
    return np.concatenate([xy, velocity], -1)


class ThroughTheWallPlanner(StraightLinePlanner):
    """First plans go straight at the goal, through the inner wall; replans follow the corridor."""

    def plan(self, observations, goals, generator=None):
        if not hasattr(self, "replanned"):  # the first call plans every episode
            self.replanned = 0
            return super().plan(observations, goals, generator)
        self.replanned += len(observations)
        paths = [corridor_plan(o[:2]) for o in observations]
        length = max(len(p) for p in paths)
        padded = np.stack([np.vstack([p, np.repeat(p[-1:], length - len(p), 0)]) for p in paths])
        return Plan(np.zeros((len(paths), length, 2)), padded, np.array([len(p) for p in paths]))


class WallStart(gymnasium.Wrapper):
    """Starts at rest in U-Maze's bottom-left cell (3, 1), across the inner wall from the goal (1, 1)."""

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        self.env.unwrapped.set_state(np.array([3.0, 1.0]), np.zeros(2))
        return np.array([3.0, 1.0, 0.0, 0.0]), info


def test_replanning_takes_an_agent_stuck_on_a_wall_around_it():
    """Plan once: the straight plan pins the agent on the inner wall for the whole episode. Closed loop: the agent
    falls behind that plan, replans from where it is stuck, follows the corridor and reaches the goal."""
    envs = [WallStart(gymnasium.make("maze2d-umaze-v1")) for _ in range(2)]
    planner = ThroughTheWallPlanner(make_planner().diffusion, horizon=80)
    once = run_maze2d_episodes(envs, planner, seed=0)
    assert once.n_replans.tolist() == [0, 0] and planner.replanned == 0
    assert (once.returns == 0).all()
    planner = ThroughTheWallPlanner(make_planner().diffusion, ClosedLoop(replan_lag=0.5), horizon=80)
    closed = run_maze2d_episodes(envs, planner, seed=0)
    assert (closed.n_replans > 0).all() and planner.replanned == closed.n_replans.sum()
    assert (closed.returns > 50).all()  # at the goal for the last 50+ of 300 steps
    assert [len(p) for p in closed.plans] == (closed.n_replans + 1).tolist()
    assert closed.plans[0][0].shape == (80, 4) and closed.summary()["replans_per_episode"] == closed.n_replans.mean()


class MeasuredReplansPlanner(ThroughTheWallPlanner):
    """ThroughTheWallPlanner whose plans carry residuals: first plans (0.0, 9.0), every replan 5.0."""

    def plan(self, observations, goals, generator=None):
        first = not hasattr(self, "replanned")
        plan = super().plan(observations, goals, generator)
        plan.residuals = np.array([0.0, 9.0]) if first else np.full(len(observations), 5.0)
        return plan


def test_a_replan_replaces_a_plan_only_if_consistent_or_less_inconsistent():
    """max_residual 1: episode 0's consistent first plan is never replaced by its inconsistent replans (5 > 1, and
    not below 0), so it stays pinned on the wall; episode 1's replan (5) beats its first plan (9) and takes it
    around. Episode 0 keeps being checked, so the planner is asked again and again."""
    envs = [WallStart(gymnasium.make("maze2d-umaze-v1")) for _ in range(2)]
    loop = ClosedLoop(max_residual=1.0, replan_lag=0.5, replan_check_every=10)
    planner = MeasuredReplansPlanner(make_planner().diffusion, loop, horizon=80)
    results = run_maze2d_episodes(envs, planner, seed=0)
    assert results.n_replans.tolist()[0] == 0 and results.n_replans[1] >= 1
    assert planner.replanned > results.n_replans.sum()  # episode 0 was replanned but kept its plan
    assert results.returns[0] == 0 and results.returns[1] > 50


def test_upsample_by_hand():
    states = np.array([[[0.0, 10.0], [4.0, 10.0], [4.0, 2.0]]])  # every 4 env steps
    expected = [[0, 10], [1, 10], [2, 10], [3, 10], [4, 10], [4, 8], [4, 6], [4, 4], [4, 2]]
    np.testing.assert_allclose(upsample(states, 4)[0], expected)
    assert upsample(states, 1) is states


def test_a_strided_run_plans_every_env_step_starting_at_the_state_and_ending_at_the_goal():
    """A run of H 16 states at stride 3 plans (16 − 1)·3 + 1 = 46 env steps; both planners upsample before judging."""
    diffusion = make_planner().diffusion
    starts, goals = np.array([[1.0, 1.0, 0.1, -0.2], [3.0, 2.0, 0.0, 0.3]]), np.array([[3.0, 3.0], [1.0, 1.0]])
    paper = Maze2dPlanner(diffusion, stride=3).plan(starts, goals, torch.Generator().manual_seed(0))
    closed = Maze2dPlanner(diffusion, ClosedLoop(horizons=(8, 16), n_candidates=2, max_residual=1e9), stride=3)
    plan = closed.plan(starts, goals, torch.Generator().manual_seed(0))
    assert paper.observations.shape == (2, 46, 4) and plan.lengths.tolist() == [22, 22]  # 8 states: 22 steps
    for p in (paper, plan):
        np.testing.assert_allclose(p.observations[:, 0], starts, atol=1e-5)
        np.testing.assert_allclose(np.stack([p.path(i)[-1, :2] for i in range(2)]), goals, atol=1e-5)
    with pytest.raises(ValueError, match="stride: 0"):
        Maze2dPlanner(diffusion, stride=0)


def test_plan_lengths_are_fractions_of_the_run_horizon_rounded_to_the_network():
    diffusion = make_planner(horizon=16).diffusion  # dim_mults (1, 2): lengths must be even
    assert plan_lengths(None, diffusion) is None
    assert plan_lengths([0.5, 0.75, 1.0], diffusion) == (8, 12, 16)
    assert plan_lengths([0.3, 0.01, 1.0], diffusion) == (2, 4, 16)  # 4.8 → 4 (nearest even), 0.16 → the least, 2
    with pytest.raises(ValueError, match="planner.horizon_fractions"):
        plan_lengths([0.0], diffusion)


def test_failures_figure_keeps_its_title_inside_the_image(tmp_path):
    """The title names the run and training seed; the layout keeps it (and the panel titles) off the image's edge."""
    from diffuser.envs.maze2d import MAZE2D_SPECS, parse_maze
    from diffuser.planning.maze2d import EpisodeResults
    from diffuser.planning.report import save_failures_figure

    paths = [corridor_plan(np.array([3.0, 1.0])), corridor_plan(np.array([1.0, 3.0]))]
    results = EpisodeResults(
        np.zeros(2), np.array([10.0, -5.0]), np.array([300, 300]), [0, 1], np.zeros((2, 4)), np.ones((2, 2)),
        Plan(np.zeros((2, 1, 2)), np.zeros((2, 1, 4))), [p[:, :4] for p in paths], [[p] for p in paths],
    )
    title = "2026-12-07_05-00-00_s1, training seed 1, step 10000: the 2 lowest of 2 episodes (episode seed: score)"
    image = save_failures_figure(tmp_path / "failures.png", results, parse_maze(MAZE2D_SPECS["maze2d-umaze-v1"].layout),
                                 title)
    assert (tmp_path / "failures.png").is_file()
    ink = (image < 200).any(axis=-1)  # dark pixels: text, walls, paths
    band = ink[: image.shape[0] // 10]  # the title's band
    assert band.any() and not band[:2].any()  # the title is there and does not touch the top
    assert not band[:, :2].any() and not band[:, -2:].any()  # nor the sides
