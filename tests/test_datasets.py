import h5py
import numpy as np
import pytest
import torch

from conftest import locomotion_arrays
from diffuser.data.d4rl import DatasetNotFoundError, find_dataset, load_d4rl, write_d4rl
from diffuser.data.preprocess import maze2d_goal, maze2d_set_terminals, preprocess
from diffuser.data.sequence import GoalDataset, SequenceDataset, ValueDataset, discounted_returns, split_episodes


def test_reader_squeezes_casts_and_keeps_nested_keys(tmp_path):
    path = tmp_path / "x.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((5, 3), np.float64)
        f["actions"] = np.zeros((5, 2), np.float32)
        f["rewards"] = np.arange(5, dtype=np.float64)[:, None]
        f["terminals"] = np.zeros((5, 1), bool)
        f["infos/qpos"] = np.ones((5, 2), np.float64)
    data = load_d4rl(path)
    assert data["observations"].dtype == np.float32 and data["rewards"].shape == (5,)
    assert data["terminals"].shape == (5,) and data["infos/qpos"].dtype == np.float32


def test_reader_names_a_missing_key(tmp_path):
    arrays = locomotion_arrays()
    del arrays["rewards"]
    path = write_d4rl(tmp_path / "x.hdf5", arrays)
    with pytest.raises(KeyError, match="rewards"):
        load_d4rl(path)


def test_reader_refuses_mismatched_rows_and_non_hdf5(tmp_path):
    arrays = locomotion_arrays()
    arrays["actions"] = arrays["actions"][:-1]
    with pytest.raises(ValueError, match="'actions' has"):
        load_d4rl(write_d4rl(tmp_path / "x.hdf5", arrays))
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        load_d4rl(bad)


def test_missing_dataset_says_where_it_looked_and_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never find the user's own ~/.d4rl files
    with pytest.raises(DatasetNotFoundError) as e:
        find_dataset("maze2d-umaze-v1", how_to_make="python -m diffuser.tools.maze2d_generate")
    assert str(tmp_path / "maze2d-umaze-sparse-v1.hdf5") in str(e.value)
    assert "maze2d_generate" in str(e.value)
    assert str(tmp_path / "home" / ".d4rl" / "datasets" / "maze2d-umaze-sparse-v1.hdf5") in str(e.value)
    path = write_d4rl(tmp_path / "hopper_medium-v2.hdf5", locomotion_arrays())
    assert find_dataset("hopper-medium-v2") == path


def test_writer_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = write_d4rl(tmp_path / "a.hdf5", locomotion_arrays(), attrs={"seed": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["a.hdf5"]
    with h5py.File(path) as f:
        assert f.attrs["seed"] == 3
    with pytest.raises(TypeError):
        write_d4rl(tmp_path / "a.hdf5", {"observations": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["a.hdf5"]
    assert load_d4rl(path)["observations"].shape == (69, 3)


def test_split_episodes_on_terminals_and_timeouts():
    episodes = split_episodes(locomotion_arrays())
    assert episodes.lengths.tolist() == [12, 20, 7, 30]
    assert episodes.terminal.tolist() == [True, False, True, False]
    data = locomotion_arrays()
    del data["timeouts"]
    data["terminals"][:] = False
    assert split_episodes(data, max_episode_steps=10).lengths.tolist() == [10] * 6  # 9 trailing rows dropped


def test_windows_with_padding_match_the_original():
    """Full episode of 1000 steps, H 32: starts 0..967; a terminated episode of length L: starts 0..L-2."""
    data = locomotion_arrays(lengths=(1000, 50), terminal=(False, True))
    ds = SequenceDataset(data, horizon=32, normalizer="gaussian", max_path_length=1000, use_padding=True)
    first = ds.indices[ds.indices < 1000 + 32]
    assert first.tolist() == list(range(968))
    second = ds.indices[ds.indices >= 1000 + 32] - (1000 + 32)
    assert second.tolist() == list(range(49))
    # The last window of the short episode runs into padding: zero rows normalized like data.
    item = ds[len(ds) - 1]
    padded = item.trajectories[2:]
    expected = ds.normalizer.normalize(torch.zeros(ds.transition_dim))
    torch.testing.assert_close(padded, expected.expand_as(padded))


def test_windows_without_padding_stay_inside_episodes():
    data = locomotion_arrays(lengths=(40, 10, 33), terminal=(False, False, True))
    ds = SequenceDataset(data, horizon=8, normalizer="limits", use_padding=False)
    assert len(ds) == (40 - 8) + (10 - 8) + (33 - 8)
    batch = ds.get_batch(np.arange(len(ds)))
    raw = np.concatenate([data["actions"], data["observations"]], 1)
    starts = np.concatenate([np.arange(32), 40 + np.arange(2), 50 + np.arange(25)])
    expected = ds.normalizer.normalize(torch.from_numpy(raw[starts[:, None] + np.arange(8)]))
    torch.testing.assert_close(batch.trajectories, expected)
    torch.testing.assert_close(batch.conditions[0], batch.trajectories[:, 0, 2:])
    assert set(batch.conditions) == {0}


def test_goal_dataset_conditions_on_first_and_last_state():
    ds = GoalDataset(locomotion_arrays(), horizon=5, normalizer="limits", use_padding=False)
    batch = ds.get_batch(np.arange(4))
    assert set(batch.conditions) == {0, 4}
    torch.testing.assert_close(batch.conditions[4], batch.trajectories[:, -1, 2:])


def test_short_episodes_and_max_path_length_give_clear_errors():
    with pytest.raises(ValueError, match="no window of horizon 64"):
        SequenceDataset(locomotion_arrays(), horizon=64, use_padding=False)
    with pytest.raises(ValueError, match="max_path_length"):
        SequenceDataset(locomotion_arrays(), horizon=4, max_path_length=25)


def test_value_targets_by_hand_with_termination_penalty():
    data = locomotion_arrays(lengths=(4, 3), terminal=(True, False))
    data["rewards"] = np.array([1, 2, 3, 4, 10, 20, 30], np.float32)
    ds = ValueDataset(data, horizon=2, normalizer="gaussian", use_padding=True, max_path_length=10,
                      termination_penalty=-100, discount=0.5)
    values = ds.get_batch(np.arange(len(ds))).values.tolist()
    # Episode 1 (terminal): rewards 1, 2, 3, 4-100; starts 0..2. Episode 2 (timeout): 10, 20, 30; starts 0..1.
    ep1 = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * -96, 2 + 0.5 * 3 + 0.25 * -96, 3 + 0.5 * -96]
    ep2 = [10 + 0.5 * 20 + 0.25 * 30, 20 + 0.5 * 30]
    np.testing.assert_allclose(values, ep1 + ep2, rtol=1e-6)
    # Standardized: the same returns less their mean over the 5 windows, over their (population) std.
    ds = ValueDataset(data, targets="standardized", horizon=2, normalizer="gaussian", use_padding=True,
                      max_path_length=10, termination_penalty=-100, discount=0.5)
    returns = np.array(ep1 + ep2)
    mean, std = returns.mean(), np.sqrt(((returns - returns.mean()) ** 2).mean())
    np.testing.assert_allclose(ds.target_statistics, [mean, std], rtol=1e-6)
    np.testing.assert_allclose(ds.get_batch(np.arange(5)).values.tolist(), (returns - mean) / std, rtol=1e-5)
    with pytest.raises(ValueError, match="env.value_targets"):
        ValueDataset(data, targets="scaled", horizon=2)


def test_discounted_returns_stop_at_episode_ends():
    out = discounted_returns(np.ones(5, np.float32), np.array([0, 1, 0, 0, 1], bool), 0.9)
    np.testing.assert_allclose(out, [1.9, 1.0, 2.71, 1.9, 1.0], rtol=1e-6)


def test_maze2d_set_terminals_ends_segments_when_leaving_the_goal():
    xy = np.array([[5, 5], [1, 1], [1.2, 1], [5, 5], [5, 5], [1, 1.1], [4, 4]], np.float32)
    data = {"observations": np.concatenate([xy, np.zeros_like(xy)], 1), "timeouts": np.ones(7, bool)}
    out = maze2d_set_terminals(data, np.array([1.0, 1.0]))
    assert out["timeouts"].tolist() == [False, False, True, False, False, True, False]
    assert maze2d_goal("maze2d-umaze-v1").tolist() == [1.0, 1.0]
    assert maze2d_goal("maze2d-large-v1").tolist() == [7.0, 9.0]
    with pytest.raises(ValueError, match="valid"):
        preprocess(data, ["normalize_rewards"], "maze2d-umaze-v1")
