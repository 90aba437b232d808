"""Property-based tests (hypothesis) of the D4RL reader/writer, episode splitting, window indexing and normalizers.

Random episode layouts (1 to 6 episodes of 1 to 12 steps, each ending in a terminal or a timeout, plus a few
trailing rows with no end that the dataset drops), random horizons, max_path_length and use_padding. Invariants:

- the window count is Σ over episodes of max(0, max_start) with max_start = min(L − 1, max_path_length − H), and
  also ≤ L − H without padding (sequence.py: window starts are range(max_start)); zero windows is a clear error;
- every window starts inside one episode, never reads past the flat array, holds that episode's rows in order and,
  only with padding, zero rows after the episode's end;
- normalize → unnormalize is the identity on the fitted data for every normalizer kind (Limits excepted on a
  constant dimension, where it divides by zero as the original does; safe_limits and gaussian handle it);
- write_d4rl → load_d4rl returns the arrays written ((N, 1) squeezed, float64 as float32).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuser.data.d4rl import load_d4rl, write_d4rl
from diffuser.data.sequence import SequenceDataset, split_episodes
from diffuser.diffusion.normalization import NORMALIZERS, make_normalizer

episodes = st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=6)


def layout(eps: list[tuple[int, bool]], tail: int, seed: int, obs_dim: int = 2, act_dim: int = 1) -> dict:
    """Flat D4RL arrays: episodes (length, ends_in_terminal) back to back, then ``tail`` rows with no end flag.

    Observation 0 holds the row number + 1, so every row of a window can be traced back to the data.
    """
    n = sum(length for length, _ in eps) + tail
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    end = 0
    for length, terminal in eps:
        end += length
        (terminals if terminal else timeouts)[end - 1] = True
    observations = rng.normal(size=(n, obs_dim)).astype(np.float32)
    observations[:, 0] = np.arange(1, n + 1)
    return {"observations": observations, "actions": rng.normal(size=(n, act_dim)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32), "terminals": terminals, "timeouts": timeouts}


@settings(max_examples=150, deadline=None)
@given(eps=episodes, tail=st.integers(0, 3), horizon=st.integers(1, 16), max_path_length=st.integers(1, 40),
       use_padding=st.booleans(), seed=st.integers(0, 2**16))
def test_windows_stay_in_one_episode_and_their_count_follows_the_rule(eps, tail, horizon, max_path_length,
                                                                      use_padding, seed):
    data = layout(eps, tail, seed)
    lengths = np.array([length for length, _ in eps])
    split = split_episodes(data)
    np.testing.assert_array_equal(split.lengths, lengths)
    np.testing.assert_array_equal(split.terminal, [terminal for _, terminal in eps])

    max_starts = np.minimum(lengths - 1, max_path_length - horizon)
    if not use_padding:
        max_starts = np.minimum(max_starts, lengths - horizon)
    expected_count = int(np.clip(max_starts, 0, None).sum())
    kwargs = dict(horizon=horizon, normalizer="identity", max_path_length=max_path_length, use_padding=use_padding)
    if lengths.max() > max_path_length:
        with pytest.raises(ValueError, match=f"max_path_length is {max_path_length}"):
            SequenceDataset(data, **kwargs)
        return
    if expected_count == 0:
        with pytest.raises(ValueError, match=f"no window of horizon {horizon} fits.*longest episode: "
                                             f"{lengths.max()} steps"):
            SequenceDataset(data, **kwargs)
        return
    ds = SequenceDataset(data, **kwargs)
    assert len(ds) == expected_count

    pad = horizon if use_padding else 0
    offsets = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]])
    episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    assert ds.indices.max() + horizon <= len(ds.trajectories)  # no index past the end
    windows = ds.get_batch(np.arange(len(ds))).trajectories.numpy()  # (B, H, 1 + 2)
    for start, window in zip(ds.indices, windows):
        episode = np.searchsorted(offsets, start, side="right") - 1
        step = start - offsets[episode]
        assert 0 <= step < min(lengths[episode] - 1, max_path_length - horizon)
        inside = step + np.arange(horizon) < lengths[episode]
        assert use_padding or inside.all()
        assert inside[0] and (np.diff(inside.astype(int)) <= 0).all()  # padding only after the episode's end
        rows = episode_starts[episode] + step + np.arange(horizon)[inside]
        np.testing.assert_array_equal(window[inside, 1], rows + 1)  # that episode's rows, in order
        np.testing.assert_array_equal(window[inside, 0], data["actions"][rows, 0])
        np.testing.assert_array_equal(window[~inside], 0)  # padding rows are zero


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(NORMALIZERS)), n=st.integers(1, 60), dim=st.integers(1, 4),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), constant=st.booleans(), seed=st.integers(0, 2**16))
def test_normalize_then_unnormalize_is_the_identity(kind, n, dim, scale, constant, seed):
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=(n, dim)) * scale + rng.normal(size=dim) * scale).astype(np.float32)
    if n == 1 or constant:  # one row makes every dimension constant
        if kind == "limits":  # like the original, Limits divides by max − min = 0 there (NaN): safe_limits widens it
            return
        data[:, 0] = data[0, 0]
    normalizer = make_normalizer(kind, dim).fit(data)
    x = torch.from_numpy(data)
    back = normalizer.unnormalize(normalizer.normalize(x))
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4 * scale)
    if dim > 1:  # a slice of dimensions round-trips alone
        part = normalizer.unnormalize(normalizer.normalize(x[:, 1:], dims=slice(1, None)), dims=slice(1, None))
        torch.testing.assert_close(part, x[:, 1:], rtol=1e-4, atol=1e-4 * scale)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), obs_dim=st.integers(1, 5), column=st.booleans(),
       compression=st.sampled_from([None, "gzip"]), seed=st.integers(0, 2**16))
def test_write_then_load_returns_the_arrays(n, obs_dim, column, compression, seed):
    rng = np.random.default_rng(seed)
    arrays = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.normal(size=(n, 2)),  # float64: read back as float32
        "rewards": rng.normal(size=(n, 1) if column else n).astype(np.float32),  # (N, 1): read back as (N,)
        "terminals": rng.random(n) < 0.3,
        "timeouts": rng.random((n, 1) if column else n) < 0.3,
        "infos/qpos": rng.integers(-5, 5, size=(n, 3)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_d4rl(write_d4rl(Path(tmp) / "x.hdf5", arrays, attrs={"seed": seed}, compression=compression))
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        expected = value.reshape(n, -1)[:, 0] if value.ndim == 2 and value.shape[1] == 1 else value
        expected = expected.astype(np.float32) if expected.dtype == np.float64 else expected
        assert loaded[key].dtype == expected.dtype and loaded[key].shape == expected.shape, key
        np.testing.assert_array_equal(loaded[key], expected)
