"""diffuser.tools.value_check: its statistics and returns worked by hand, and the simulator replay it relies on."""

import numpy as np
import pytest

from diffuser.tools.value_check import episode_windows, realized_returns, spearman, split_episodes


def test_spearman_by_hand():
    # y's ranks are (0, 1, 3, 2): Σd² = 2, so ρ = 1 − 6·2 / (4·15) = 0.8.
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 40, 30])) == pytest.approx(0.8)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1.0)


def test_windows_and_returns_to_go_by_hand():
    episode = {
        "actions": np.array([[1.0], [2.0], [3.0]]),
        "observations": np.array([[10.0], [20.0], [30.0]]),
        "rewards": np.array([1.0, 2.0, 3.0]),
        "terminals": np.array([False, False, True]),
    }
    windows, targets = episode_windows(episode, horizon=3, discount=0.5, penalty=-10.0, every=1)
    # Starts 0 and 1 (a window starts before the last step). From 0: 1 + 0.5·2 + 0.25·(3 − 10) = 0.25;
    # from 1: 2 + 0.5·(3 − 10) = −1.5.
    np.testing.assert_allclose(targets, [0.25, -1.5])
    np.testing.assert_array_equal(windows[1], [[2.0, 20.0], [3.0, 30.0], [0.0, 0.0]])  # zero row past the end
    episode["terminals"][-1] = False  # a timeout: no penalty
    _, targets = episode_windows(episode, horizon=3, discount=0.5, penalty=-10.0, every=2)
    np.testing.assert_allclose(targets, [1 + 0.5 * 2 + 0.25 * 3])


class Replay:
    """A 'policy' that plays back recorded actions by episode step."""

    def __init__(self, actions: np.ndarray):
        self.actions = actions

    def act(self, observations, rng, steps):
        return np.stack([self.actions[min(s, len(self.actions) - 1)] for s in steps]), None


def test_replaying_an_episode_from_its_saved_state_gives_its_return():
    from diffuser.tools.collect import rollout

    data = rollout("hopper-medium-v2", "random", n_steps=60, seed=3, n_envs=1)
    episode = split_episodes(data.arrays)[0]
    n, t0, horizon = len(episode["rewards"]), 4, 3
    assert episode["terminals"][-1] and n > t0 + horizon  # random Hopper falls within a few dozen steps
    plan = episode["actions"][t0 : t0 + horizon][None]
    got, planned = realized_returns("hopper-medium-v2", "v4", episode["infos/qpos"][t0], episode["infos/qvel"][t0],
                                    t0, plan, Replay(episode["actions"]), discount=0.9, penalty=-100.0, seed=0)
    rewards = episode["rewards"][t0:].astype(np.float64)
    rewards[-1] -= 100.0
    expected = (rewards * 0.9 ** np.arange(len(rewards))).sum()
    assert got[0] == pytest.approx(expected, rel=1e-4, abs=1e-3)
    # the plan's own 3 steps earned r_4 + 0.9·r_5 + 0.81·r_6 (the fall comes later, so no penalty among them)
    assert planned[0] == pytest.approx(rewards[0] + 0.9 * rewards[1] + 0.81 * rewards[2], rel=1e-4, abs=1e-3)


def test_the_plans_own_steps_carry_the_penalty_of_a_fall_among_them():
    from diffuser.tools.collect import rollout

    data = rollout("hopper-medium-v2", "random", n_steps=60, seed=3, n_envs=1)
    episode = split_episodes(data.arrays)[0]
    n = len(episode["rewards"])
    t0 = n - 2  # a plan of 3 steps from here falls at its second step, as the episode did
    plan = np.concatenate([episode["actions"][t0:], episode["actions"][-1:]])[None]
    got, planned = realized_returns("hopper-medium-v2", "v4", episode["infos/qpos"][t0], episode["infos/qvel"][t0],
                                    t0, plan, Replay(episode["actions"]), discount=0.5, penalty=-100.0, seed=0)
    r0, r1 = episode["rewards"][t0:].astype(np.float64)
    assert planned[0] == pytest.approx(r0 + 0.5 * (r1 - 100.0), rel=1e-4, abs=1e-3)
    assert got[0] == pytest.approx(planned[0], rel=1e-6)  # nothing after the fall


def test_a_folder_that_is_not_a_run_gets_one_line(tmp_path):
    from diffuser.tools.value_check import main

    with pytest.raises(SystemExit) as exit_info:  # SystemExit(message): Python prints it on stderr and exits 1
        main(["--diffusion-run", str(tmp_path / "nothing"), "--value-run", str(tmp_path / "nothing")])
    message = str(exit_info.value.code)
    assert message.startswith("error:") and "is not a run folder" in message and "\n" not in message


def test_a_dynamics_run_without_an_iql_run_gets_one_line(tmp_path):
    from diffuser.tools.value_check import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--diffusion-run", str(tmp_path), "--dynamics-run", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith("error:") and "--dynamics-run needs --iql-run" in message and "\n" not in message
