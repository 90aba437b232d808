"""Trajectory windows over D4RL-style data: SequenceDataset, GoalDataset (Maze2D) and ValueDataset.

Episodes end at ``terminals | timeouts``. Each dataset keeps one flat array of normalized transitions
``[actions, observations]`` (episodes back to back, each followed by ``horizon`` zero rows when padding is used) and
an index table of window starts, so a whole batch is gathered with one fancy index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.normalization import Normalizer, make_normalizer


@dataclass
class Episodes:
    """Episode boundaries over flat arrays: rows [starts[i], ends[i]) form episode i; terminal[i] if it ended in a
    terminal state (not a timeout)."""

    starts: np.ndarray
    ends: np.ndarray
    terminal: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts


def split_episodes(data: Mapping[str, np.ndarray], max_episode_steps: int | None = None) -> Episodes:
    """Split flat D4RL arrays into episodes ending at ``terminals | timeouts`` (the ending row belongs to the episode).

    Without a ``timeouts`` key, an episode also ends after ``max_episode_steps`` rows. Rows after the last end are
    dropped, as in the original.
    """
    terminals = np.asarray(data["terminals"]).astype(bool)
    n = len(terminals)
    if "timeouts" in data:
        timeouts = np.asarray(data["timeouts"]).astype(bool)
        ends = np.flatnonzero(terminals | timeouts) + 1
    else:
        ends_list, step = [], 0
        for i in range(n):
            if terminals[i] or (max_episode_steps is not None and step == max_episode_steps - 1):
                ends_list.append(i + 1)
                step = 0
            else:
                step += 1
        ends = np.asarray(ends_list, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return Episodes(starts, ends.astype(np.int64), terminals[ends - 1] if len(ends) else np.zeros(0, bool))


def discounted_returns(rewards: np.ndarray, episode_ends: np.ndarray, discount: float) -> np.ndarray:
    """Reward-to-go Σ_k γ^k r[i + k] up to the end of each row's episode; episode_ends[i] is True on last rows."""
    out = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    r = rewards.astype(np.float64)
    for i in range(len(r) - 1, -1, -1):
        running = r[i] + (0.0 if episode_ends[i] else discount * running)
        out[i] = running
    return out.astype(np.float32)


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of ``horizon`` transitions [a_h, s_h], normalized per dimension, conditioned on their first state."""

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        *,
        horizon: int,
        normalizer: str = "gaussian",
        max_path_length: int = 1000,
        use_padding: bool = True,
        termination_penalty: float = 0.0,
        drop_last_transition: bool = False,
        discount: float = 0.997,
        stride: int = 1,
    ):
        """data: flat D4RL arrays (after preprocessing). drop_last_transition: drop each episode's last row (Maze2D).
        stride: a window holds every stride-th row of (horizon − 1)·stride + 1 consecutive rows (1: all of them)."""
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"env.stride: {stride} must be an integer ≥ 1 (1: every step, the paper's windows)")
        self.horizon, self.stride = horizon, int(stride)
        span = (horizon - 1) * self.stride + 1  # rows a window covers
        self.use_padding = use_padding
        self.max_path_length = max_path_length
        self.discount = discount
        observations = np.asarray(data["observations"], dtype=np.float32)
        actions = np.asarray(data["actions"], dtype=np.float32)
        if observations.ndim != 2 or actions.ndim != 2:
            raise ValueError(
                f"observations and actions must be 2-D (N, dim); got {observations.shape} and {actions.shape}"
            )
        self.observation_dim = observations.shape[1]
        self.action_dim = actions.shape[1]
        self.transition_dim = self.observation_dim + self.action_dim

        episodes = split_episodes(data)
        ends = episodes.ends - 1 if drop_last_transition else episodes.ends
        keep = ends > episodes.starts
        starts, ends, terminal = episodes.starts[keep], ends[keep], episodes.terminal[keep]
        if len(starts) == 0:
            raise ValueError("the dataset holds no complete episode (no row with terminals or timeouts set)")
        lengths = ends - starts
        if lengths.max() > max_path_length:
            raise ValueError(
                f"an episode has {lengths.max()} steps but max_path_length is {max_path_length}; "
                f"raise env.max_path_length to at least {lengths.max()}"
            )
        self.path_lengths = lengths

        # Flat layout: each episode followed by `pad` zero rows.
        pad = span if use_padding else 0
        offsets = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]]).astype(np.int64)
        total = int((lengths + pad).sum())
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        real = np.concatenate([o + np.arange(n) for o, n in zip(offsets, lengths)])
        raw = np.zeros((total, self.transition_dim), dtype=np.float32)
        raw[real] = np.concatenate([actions[rows], observations[rows]], axis=1)
        self.normalizer: Normalizer = make_normalizer(normalizer, self.transition_dim).fit(raw[real])
        with torch.no_grad():
            self.trajectories = self.normalizer.normalize(torch.from_numpy(raw)).float()

        rewards = np.zeros(total, dtype=np.float32)
        rewards[real] = np.asarray(data["rewards"], dtype=np.float32)[rows]
        last_rows = offsets + lengths - 1
        rewards[last_rows[terminal]] += termination_penalty
        self._rewards, self._last_rows, self._terminal = rewards, last_rows, terminal
        self._values: np.ndarray | None = None

        starts_per_episode = []
        for offset, length in zip(offsets, lengths):
            max_start = min(length - 1, max_path_length - span)
            if not use_padding:
                max_start = min(max_start, length - span)
            if max_start > 0:
                starts_per_episode.append(offset + np.arange(max_start))
        if not starts_per_episode:
            if not use_padding:
                remedy = "use a shorter horizon or set env.use_padding=true"
            elif max_path_length <= span:
                remedy = f"use a shorter horizon or raise env.max_path_length ({max_path_length}) above it"
            else:
                remedy = "windows start inside an episode and before its last step: use episodes of 2+ steps"
            raise ValueError(
                f"no window of horizon {horizon} fits in any episode (longest episode: {lengths.max()} steps"
                + (f"; at stride {self.stride} a window spans {span}); " if self.stride > 1 else "); ")
                + remedy
            )
        self.indices = np.concatenate(starts_per_episode)
        self._starts: torch.Tensor | None = None  # the window index as a tensor beside the rows (window_starts)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Batch:
        batch = self.get_batch(np.array([i]))
        return Batch(
            batch.trajectories[0],
            {k: v[0] for k, v in batch.conditions.items()},
            None if batch.values is None else batch.values[0],
        )

    def conditions(self, trajectories: torch.Tensor) -> dict[int, torch.Tensor]:
        """Conditions of a window batch: its first normalized state."""
        return {0: trajectories[:, 0, self.action_dim :]}

    def to(self, device: torch.device | str) -> "SequenceDataset":
        """Keep the normalized rows and the window index on ``device``: batches are then gathered there, with no
        copy from the host per step (the trainer calls this with its device). Returns self."""
        self.trajectories = self.trajectories.to(device)
        self._starts = self.window_starts().to(device)
        return self

    def window_starts(self) -> torch.Tensor:
        """The window index (the first row of each window) as a tensor on the rows' device."""
        if self._starts is None:
            self._starts = torch.from_numpy(self.indices).to(self.trajectories.device)
        return self._starts

    def rows(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Flat row of the first transition of windows idx (B,), on the rows' device."""
        return self.window_starts()[torch.as_tensor(idx, device=self.trajectories.device)]

    def get_batch(self, idx: np.ndarray | torch.Tensor) -> Batch:
        """Gather windows idx (B,) (numpy, or a tensor on any device) → Batch with trajectories (B, H, D) on the
        rows' device."""
        offsets = self.stride * torch.arange(self.horizon, device=self.trajectories.device)
        trajectories = self.trajectories[self.rows(idx)[:, None] + offsets]
        return Batch(trajectories, self.conditions(trajectories))


class GoalDataset(SequenceDataset):
    """Maze2D windows, conditioned on their first and last states: {0: s_0, H−1: s_{H−1}}."""

    def conditions(self, trajectories: torch.Tensor) -> dict[int, torch.Tensor]:
        return {0: trajectories[:, 0, self.action_dim :], self.horizon - 1: trajectories[:, -1, self.action_dim :]}


VALUE_TARGETS = ("raw", "standardized")


class ValueDataset(SequenceDataset):
    """Windows with value targets: the discounted return G from the window start to its episode's end.

    targets "raw" (the original): G itself. "standardized" (not in the original): (G − mean) / std over the windows,
    so the value network learns outputs of order 1 whatever the dataset's reward scale, and a guide scale means the
    same on every dataset; ``target_statistics`` holds (mean, std) to convert back.
    """

    def __init__(self, data: Mapping[str, np.ndarray], *, targets: str = "raw", **kwargs):
        if targets not in VALUE_TARGETS:
            raise ValueError(f"env.value_targets: '{targets}' is not one of {list(VALUE_TARGETS)}")
        super().__init__(data, **kwargs)
        self.targets = targets
        self._targets: torch.Tensor | None = None  # standardized targets of every row, built on first use
        self.target_statistics = (0.0, 1.0)
        if targets == "standardized":
            returns = self.returns()[self.indices]
            self.target_statistics = (float(returns.mean()), float(returns.std()) or 1.0)

    def returns(self) -> np.ndarray:
        """Reward-to-go of every flat row, computed once."""
        if self._values is None:
            episode_end = np.zeros(len(self._rewards), dtype=bool)
            episode_end[self._last_rows] = True
            self._values = discounted_returns(self._rewards, episode_end, self.discount)
        return self._values

    def get_batch(self, idx: np.ndarray | torch.Tensor) -> Batch:
        batch = super().get_batch(idx)
        device = self.trajectories.device
        targets = self._targets
        if targets is None or targets.device != device:  # the value targets of every row, once, on the rows' device
            mean, std = self.target_statistics
            targets = self._targets = torch.from_numpy(((self.returns() - mean) / std).astype(np.float32)).to(device)
        batch.values = targets[self.rows(idx)]
        return batch


class TransitionDataset(SequenceDataset):
    """Transitions (s, a, r, s', d) for TD critics (IQL): two-row windows [[a, s], [a', s']] with the first row's
    reward and d = 1 where that row ended its episode in a terminal state.

    Every row of an episode is a transition except the last row of an episode that timed out (its next state is not
    in the data); the last row of a terminal episode is kept (d = 1, its s' is a padding row that d zeroes). Rewards
    are scaled by 1000 / (max − min episode return), CORL's reward normalization for locomotion, so γ and the
    learning rate mean the same on every dataset; ``reward_scale`` holds the factor.
    """

    def __init__(self, data: Mapping[str, np.ndarray], **kwargs):
        kwargs = {**kwargs, "horizon": 2, "use_padding": True}
        super().__init__(data, **kwargs)
        lengths, last_rows = self.path_lengths, self._last_rows
        episode_returns = np.add.reduceat(self._rewards, last_rows - lengths + 1)
        spread = float(episode_returns.max() - episode_returns.min())
        self.reward_scale = 1000.0 / spread if spread > 0 else 1.0
        self.indices = np.concatenate([np.arange(last - n + 1, last + (1 if ended else 0))
                                       for last, n, ended in zip(last_rows, lengths, self._terminal)])
        self._starts = None  # the index changed
        terminal_rows = np.zeros(len(self._rewards), dtype=np.float32)
        terminal_rows[last_rows[self._terminal]] = 1.0
        # (scaled reward, d) of every row, beside the rows (moved with them by to())
        self._reward_terminal = torch.from_numpy(np.stack([self._rewards * np.float32(self.reward_scale),
                                                           terminal_rows], axis=1))

    def to(self, device: torch.device | str) -> "TransitionDataset":
        super().to(device)
        self._reward_terminal = self._reward_terminal.to(device)
        return self

    def get_batch(self, idx: np.ndarray | torch.Tensor) -> Batch:
        batch = super().get_batch(idx)
        batch.rewards, batch.terminals = self._reward_terminal[self.rows(idx)].unbind(dim=1)
        return batch
