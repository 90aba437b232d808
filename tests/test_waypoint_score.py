"""tools/waypoint_score: D4RL's map-using controller scored on plan.py's episode seeds."""

import json

import numpy as np
import pytest

from diffuser.tools.waypoint_score import main, score_controller


def test_controller_reaches_the_umaze_goal_on_plan_py_episode_seeds(tmp_path):
    result = main(["--env", "maze2d-umaze-v1", "--episodes", "3", "--seed", "5", "--output", str(tmp_path / "w.json")])
    episodes = result["episodes"]
    assert [e["seed"] for e in episodes] == [5, 6, 7] and all(e["length"] == 300 for e in episodes)
    assert all(e["goal"] == [1.0, 1.0] for e in episodes)  # the fixed goal of single-task U-Maze
    returns = np.array([e["return"] for e in episodes])
    assert (returns > 100).all()  # at the goal (reward 1 a step) for most of the 300 steps: the farthest start
    #   needs about 120 steps at the speed limit
    scores = np.array([e["normalized_score"] for e in episodes])
    np.testing.assert_allclose(scores, 100 * (returns - 23.85) / (161.86 - 23.85))  # D4RL's U-Maze references
    assert result["summary"]["normalized_score_mean"] == pytest.approx(scores.mean())
    assert result["summary"]["normalized_score_se"] == pytest.approx(scores.std() / np.sqrt(3))
    assert json.loads((tmp_path / "w.json").read_text())["summary"] == result["summary"]


def test_multi2d_draws_its_goals_and_noise_changes_the_actions():
    multi = score_controller("maze2d-umaze-v1", 4, 0, multi_task=True)
    assert len({tuple(e["goal"]) for e in multi["episodes"]}) > 1
    quiet = score_controller("maze2d-umaze-v1", 2, 0)
    noisy = score_controller("maze2d-umaze-v1", 2, 0, noise=0.5)
    assert [e["return"] for e in quiet["episodes"]] != [e["return"] for e in noisy["episodes"]]


def test_bad_input_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--env", "hopper-medium-v2", "--episodes", "2"])
    assert exit_info.value.code == 1 and "not a Maze2D env" in capsys.readouterr().err
