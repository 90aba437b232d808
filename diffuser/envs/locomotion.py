"""Gymnasium Hopper, Walker2d and HalfCheetah under D4RL dataset names, with D4RL's reference scores.

``-v4`` is the default: its rewards and Walker2d's foot friction match the gym ``-v2`` envs D4RL was collected in.
``-v5`` is selectable (docs/d4rl_and_envs.md §2.4: healthy reward only while healthy, other Walker2d friction).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import gymnasium

GYM_NAMES = {"hopper": "Hopper", "walker2d": "Walker2d", "halfcheetah": "HalfCheetah"}

# D4RL reference returns: min = random policy, max = expert (same for v0, v1, v2).
REF_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}
DIMS = {"hopper": (11, 3), "walker2d": (17, 6), "halfcheetah": (17, 6)}  # (observation_dim, action_dim)
LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert", "full-replay")
GYM_VERSIONS = ("v4", "v5")
_NAME = re.compile(r"^(hopper|walker2d|halfcheetah)-([a-z-]+)-(v[012])$")  # D4RL's locomotion versions


@dataclass(frozen=True)
class LocomotionName:
    """A parsed D4RL locomotion dataset name such as ``hopper-medium-v2``."""

    env: str
    level: str
    version: str

    @property
    def ref_min_score(self) -> float:
        return REF_SCORES[self.env][0]

    @property
    def ref_max_score(self) -> float:
        return REF_SCORES[self.env][1]


def parse_locomotion_name(name: str) -> LocomotionName:
    """'hopper-medium-expert-v2' → LocomotionName('hopper', 'medium-expert', 'v2'); a clear error otherwise."""
    match = _NAME.match(name)
    if match is None or match.group(2) not in LEVELS:
        raise ValueError(
            f"'{name}' is not a locomotion dataset name: expected <env>-<level>-v<0|1|2> with env in "
            f"{sorted(GYM_NAMES)} and level in {list(LEVELS)}"
        )
    return LocomotionName(*match.groups())


def is_locomotion(name: str) -> bool:
    """True for names parse_locomotion_name accepts."""
    try:
        parse_locomotion_name(name)
    except ValueError:
        return False
    return True


def make_locomotion_env(name: str, gym_version: str = "v4", **kwargs) -> gymnasium.Env:
    """The gymnasium env of a D4RL dataset name (e.g. hopper-medium-v2 → Hopper-v4), with its 1000-step limit."""
    if gym_version not in GYM_VERSIONS:
        raise ValueError(f"gym_version must be one of {list(GYM_VERSIONS)}, got '{gym_version}'")
    parsed = parse_locomotion_name(name)
    if kwargs.get("render_mode") is not None and "camera_id" not in kwargs:
        # gymnasium's default view is a free camera (its "trackbodyid" is overridden at every render), so the agent
        # runs out of the picture; the models' own "track" camera follows the centre of mass.
        kwargs.setdefault("camera_name", "track")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is out of date.*")  # -v4 is chosen on purpose (D4RL parity)
        return gymnasium.make(f"{GYM_NAMES[parsed.env]}-{gym_version}", **kwargs)


def locomotion_normalized_score(name: str, episode_return: float) -> float:
    """D4RL normalized score as a fraction: (R − random) / (expert − random); ×100 to report."""
    parsed = parse_locomotion_name(name)
    return (episode_return - parsed.ref_min_score) / (parsed.ref_max_score - parsed.ref_min_score)


# gymnasium's termination rule (the Hopper and Walker2d defaults of -v4 and -v5) on observations, whose first two
# entries are the torso's height z and angle (qpos[1:3]): (z range, angle range, |entry| bound of every entry after z).
# HalfCheetah never terminates (no bounds). Hopper's observation clips velocities at ±10, so its ±100 bound reads
# the joint angles only (an unobservable |qvel| > 100 is not seen).
_INF = float("inf")
HEALTHY = {"hopper": ((0.7, _INF), (-0.2, 0.2), 100.0), "walker2d": ((0.8, 2.0), (-1.0, 1.0), _INF),
           "halfcheetah": ((-_INF, _INF), (-_INF, _INF), _INF)}


def healthy(name: str, observations):
    """Whether the env of dataset ``name`` would go on from these raw observations (..., observation_dim), a numpy
    array or a torch tensor → booleans (...); the env's own rule, so a model's predicted states can end an episode."""
    (z_low, z_high), (angle_low, angle_high), bound = HEALTHY[parse_locomotion_name(name).env]
    z, angle = observations[..., 0], observations[..., 1]
    return (z > z_low) & (z < z_high) & (angle > angle_low) & (angle < angle_high) & (
        abs(observations[..., 1:]) < bound).all(-1)
