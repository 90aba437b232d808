"""Behaviour policies for locomotion data collection: numpy in, numpy out, one interface, no SB3 or gym imports.

Every policy has ``observation_dim``, ``action_dim``, ``kind`` and ``source`` and one method::

    actions, log_probs = policy.act(observations, rng, steps=None)
    # observations: (N, observation_dim); actions: (N, action_dim) float32 in [-1, 1];
    # log_probs: (N,) float32 log-density of the sampled actions, or None when the policy is deterministic.
    # steps: (N,) int episode step of each row; only time-feature policies (rl-zoo PPO Walker2d) need it.

Actions are sampled (stochastic) unless the policy was built with ``deterministic=True``. Networks are small torch
MLPs run under ``inference_mode`` on one thread. Loaders:

- :func:`load_sb3_zip`: RL-Zoo stable-baselines3 saves (SAC/TQC tanh-Gaussian, PPO/A2C/TRPO Gaussian MLP, ARS linear),
  with observation normalization from the sibling ``vecnormalize.pkl``.
- :func:`load_d4rl_policy`: the rlkit tanh-Gaussian policy stored in a D4RL file's ``metadata/policy``.
- :func:`load_cs285_expert`: the Berkeley cs285 expert pickles (tanh MLP Gaussian).
- :class:`RandomPolicy`: uniform actions in [-1, 1].

Pickles (``vecnormalize.pkl``, cs285 experts) are read with :class:`RestrictedUnpickler`, which rebuilds numpy arrays
and plain containers only; stable-baselines3 and gym classes become inert stand-ins that merely hold their state.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import yaml  # PyYAML, installed with hydra-core (omegaconf)
from torch.nn.functional import linear

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3 SAC/TQC and rlkit clamp the tanh-Gaussian log-std to this range
LOG_2PI = float(np.log(2.0 * np.pi))
TIME_FEATURE_MAX_STEPS = 1000  # sb3_contrib TimeFeatureWrapper default
ACTIVATIONS = ("relu", "tanh")


class PolicyLoadError(ValueError):
    """A policy file could not be turned into a policy; the message names the file and the reason."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; the message names the file and the refused global."""


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickling
# ----------------------------------------------------------------------------------------------------------------


class StateHolder:
    """Inert stand-in for a pickled class we refuse to import: it only stores its constructor args and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict state, slot state)
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state


class VecNormalizeState(StateHolder):
    """Stand-in for stable_baselines3 VecNormalize: holds obs_rms, clip_obs, epsilon, norm_obs, ..."""


class RunningMeanStdState(StateHolder):
    """Stand-in for stable_baselines3 RunningMeanStd: holds mean, var, count."""


class SpaceState(StateHolder):
    """Stand-in for a gym/gymnasium Box space: holds low, high, shape, dtype."""


class RandomStateState(StateHolder):
    """Stand-in for a pickled numpy RandomState (a space's RNG): holds its bit-generator state, never used."""


def _reconstruct(cls: type, *args: Any) -> np.ndarray:
    """numpy's ndarray pickle constructor, restricted to plain ndarrays."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"ndarray reconstruction of {cls!r} refused")
    return np.ndarray.__new__(np.ndarray, *args)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python-2 pickles use it for bytes: str → latin-1 bytes, nothing else."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) refused")
    return codecs.encode(text, "latin1")


def _numpy_attr(module: str, name: str) -> Any:
    """A numpy internal by its pickled path; numpy 2 moved ``numpy.core`` to ``numpy._core``."""
    try:
        return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(module.replace("numpy._core", "numpy.core")), name)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The complete allow-list: numpy arrays/dtypes/scalars, plain containers and inert stand-ins."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): dict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _latin1_encode,
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): VecNormalizeState,
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): RunningMeanStdState,
        ("gym.spaces.box", "Box"): SpaceState,
        ("gymnasium.spaces.box", "Box"): SpaceState,
        ("numpy.random._pickle", "__randomstate_ctor"): RandomStateState,
        ("numpy.random._pickle", "__generator_ctor"): RandomStateState,
        ("numpy.random._pickle", "__bit_generator_ctor"): RandomStateState,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = _numpy_attr("numpy.core.multiarray", "scalar")
        allowed[(f"{core}.numeric", "_frombuffer")] = _numpy_attr("numpy.core.numeric", "_frombuffer")
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of :func:`_allowed_globals`; anything else is refused."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python-2 pickles of numpy arrays (cs285)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise UnsafePickleError(
            f"{self.source}: refused to load global '{module}.{name}' from the pickle "
            "(only numpy arrays/scalars, plain containers and known SB3/gym state objects are allowed)"
        )


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickle through :class:`RestrictedUnpickler`; refused globals raise :class:`UnsafePickleError`."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, str(path)).load()


# ----------------------------------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------------------------------


class ObservationNormalizer:
    """obs ← clip((obs − mean) / scale, −clip, clip) in float64, returned as float32."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, clip: float | None = None) -> None:
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.clip = clip

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        x = (np.asarray(observations, dtype=np.float64) - self.mean) / self.scale
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)
        return x.astype(np.float32)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A contiguous float32 CPU tensor of an array."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@contextlib.contextmanager
def single_thread_torch():
    """Run torch on one thread inside the block: small batched MLPs are fastest so, and no thread pool spins."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLP:
    """Dense layers (torch layout W: (out, in)) with one activation between layers, none after the last.

    Runs in torch on one thread (:func:`single_thread_torch`, ~1 µs to enter): a (16, 256) layer then costs ~15 µs,
    while torch's pool competing with numpy's BLAS threads on a 2-core machine made it ~7 ms.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray | None]], activation: str) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation '{activation}'; known: {list(ACTIVATIONS)}")
        self.weights = [_tensor(w) for w, _ in layers]
        self.biases = [None if b is None else _tensor(b).reshape(-1) for _, b in layers]
        self.activation = activation
        self.in_dim, self.out_dim = self.weights[0].shape[1], self.weights[-1].shape[0]
        for w_prev, w_next in zip(self.weights, self.weights[1:]):
            if w_prev.shape[0] != w_next.shape[1]:
                raise ValueError(f"layer shapes do not chain: {tuple(w_prev.shape)} then {tuple(w_next.shape)}")

    def __call__(self, x: np.ndarray, final_activation: bool = False) -> np.ndarray:
        act = torch.relu if self.activation == "relu" else torch.tanh
        with torch.inference_mode(), single_thread_torch():
            h = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                h = linear(h, w, b)
                if i < len(self.weights) - 1 or final_activation:
                    h = act(h)
            return h.numpy()


class _PolicyBase:
    """Shared attributes and input handling: normalization and the optional time feature."""

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        kind: str,
        source: str,
        normalizer: ObservationNormalizer | None = None,
        time_feature_max_steps: int | None = None,
        deterministic: bool = False,
    ) -> None:
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        self.kind, self.source = kind, source
        self.normalizer = normalizer
        self.time_feature_max_steps = time_feature_max_steps
        self.deterministic = deterministic

    @property
    def needs_steps(self) -> bool:
        """True when act() needs each row's episode step (a TimeFeatureWrapper policy)."""
        return self.time_feature_max_steps is not None

    def _inputs(self, observations: np.ndarray, steps: np.ndarray | None) -> np.ndarray:
        """(N, observation_dim) → network input: time feature appended, then normalized, as float32."""
        obs = np.asarray(observations)
        if obs.ndim != 2 or obs.shape[1] != self.observation_dim:
            raise ValueError(f"{self.source}: expected observations (N, {self.observation_dim}), got {obs.shape}")
        if self.time_feature_max_steps is not None:
            if steps is None:
                raise ValueError(f"{self.source}: this policy has a time feature; pass steps= (episode step per row)")
            feature = 1.0 - np.asarray(steps, dtype=np.float64).reshape(-1, 1) / self.time_feature_max_steps
            obs = np.concatenate([np.asarray(obs, dtype=np.float64), feature], axis=1)
        if self.normalizer is not None:
            return self.normalizer(obs)
        return np.asarray(obs, dtype=np.float32)

    def __repr__(self) -> str:
        mode = "deterministic" if self.deterministic else "stochastic"
        dims = f"obs={self.observation_dim}, act={self.action_dim}"
        return f"{type(self).__name__}({self.kind}, {mode}, {dims}, {self.source})"


class TanhGaussianPolicy(_PolicyBase):
    """SAC/TQC/rlkit actor: a = tanh(mu + exp(clamp(log_std)) · ε); log-prob includes the tanh correction."""

    def __init__(self, trunk: MLP, mu: MLP, log_std: MLP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trunk, self.mu, self.log_std = trunk, mu, log_std

    def act(
        self, observations: np.ndarray, rng: np.random.Generator, steps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """observations (N, observation_dim) → actions (N, action_dim), log_probs (N,) or None."""
        h = self.trunk(self._inputs(observations, steps), final_activation=True)
        mu = self.mu(h)
        if self.deterministic:
            return np.tanh(mu).astype(np.float32), None
        log_std = np.clip(self.log_std(h), LOG_STD_MIN, LOG_STD_MAX)
        eps = rng.standard_normal(mu.shape, dtype=np.float32)
        u = mu + np.exp(log_std) * eps
        # log N(u; mu, std) − Σ log(1 − tanh(u)²), the latter as 2·(log 2 − u − softplus(−2u)) for stability.
        gauss = -0.5 * eps**2 - log_std - 0.5 * LOG_2PI
        squash = 2.0 * (np.log(2.0) - u - np.logaddexp(0.0, -2.0 * u))
        log_probs = (gauss - squash).sum(axis=1)
        return np.tanh(u).astype(np.float32), log_probs.astype(np.float32)


class GaussianPolicy(_PolicyBase):
    """PPO/A2C/TRPO and cs285 actor: a = clip(mean + exp(log_std) · ε, −1, 1); log-prob of the unclipped sample."""

    def __init__(self, net: MLP, log_std: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.log_std_vector = np.asarray(log_std, dtype=np.float32).reshape(-1)

    def act(
        self, observations: np.ndarray, rng: np.random.Generator, steps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """observations (N, observation_dim) → actions (N, action_dim), log_probs (N,) or None."""
        mean = self.net(self._inputs(observations, steps))
        if self.deterministic:
            return np.clip(mean, -1.0, 1.0).astype(np.float32), None
        eps = rng.standard_normal(mean.shape, dtype=np.float32)
        sample = mean + np.exp(self.log_std_vector) * eps
        log_probs = (-0.5 * eps**2 - self.log_std_vector - 0.5 * LOG_2PI).sum(axis=1)
        return np.clip(sample, -1.0, 1.0).astype(np.float32), log_probs.astype(np.float32)


class LinearPolicy(_PolicyBase):
    """ARS linear policy: a = clip(W · normalize(obs), −1, 1); deterministic, so no log-probs."""

    def __init__(self, net: MLP, **kwargs: Any) -> None:
        super().__init__(deterministic=True, **kwargs)
        self.net = net

    def act(
        self, observations: np.ndarray, rng: np.random.Generator, steps: np.ndarray | None = None
    ) -> tuple[np.ndarray, None]:
        """observations (N, observation_dim) → actions (N, action_dim), None."""
        return np.clip(self.net(self._inputs(observations, steps)), -1.0, 1.0).astype(np.float32), None


class RandomPolicy:
    """Uniform actions in [−1, 1]^action_dim; log-prob = −action_dim · log 2."""

    kind = "random"
    source = "uniform[-1, 1]"
    deterministic = False
    needs_steps = False

    def __init__(self, action_dim: int, observation_dim: int | None = None) -> None:
        self.action_dim = int(action_dim)
        self.observation_dim = observation_dim  # None: any observation size

    def act(
        self, observations: np.ndarray, rng: np.random.Generator, steps: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """observations (N, ·) → actions (N, action_dim) uniform in [−1, 1], log_probs (N,)."""
        n = len(observations)
        actions = rng.uniform(-1.0, 1.0, size=(n, self.action_dim)).astype(np.float32)
        return actions, np.full(n, -self.action_dim * np.log(2.0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"RandomPolicy(act={self.action_dim})"


Policy = TanhGaussianPolicy | GaussianPolicy | LinearPolicy | RandomPolicy  # what every loader returns

# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------

SB3_ALGOS = ("sac", "tqc", "ppo", "a2c", "trpo", "ars")


def _orderedish_yaml(path: Path) -> dict:
    """Read an RL-Zoo config.yml (an OrderedDict written with a python/object/apply tag) without executing anything."""

    class Loader(yaml.SafeLoader):
        pass

    def ordered(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
        pairs = loader.construct_sequence(node, deep=True)
        items = pairs[0] if len(pairs) == 1 and isinstance(pairs[0], list) else pairs
        return {k: v for k, v in items}

    Loader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered)
    with open(path) as f:
        return yaml.load(f, Loader=Loader) or {}


def _time_feature_steps(config: dict) -> int | None:
    """max_steps of a TimeFeatureWrapper named in config.yml's env_wrapper, else None."""
    wrappers = config.get("env_wrapper") or []
    for wrapper in wrappers if isinstance(wrappers, list) else [wrappers]:
        name, kwargs = next(iter(wrapper.items())) if isinstance(wrapper, dict) else (wrapper, None)
        if "TimeFeatureWrapper" in str(name):
            return int((kwargs or {}).get("max_steps", TIME_FEATURE_MAX_STEPS))
    return None


def _vecnormalize(pkl: Path) -> ObservationNormalizer | None:
    """Observation statistics of a VecNormalize pickle (restricted unpickling); None when it does not norm_obs."""
    state = safe_load_pickle(pkl)
    if not isinstance(state, VecNormalizeState) or not isinstance(getattr(state, "obs_rms", None), RunningMeanStdState):
        raise PolicyLoadError(f"{pkl}: not a stable-baselines3 VecNormalize pickle with obs_rms")
    if not getattr(state, "norm_obs", True):
        return None
    rms = state.obs_rms
    eps = float(getattr(state, "epsilon", 1e-8))
    clip = float(getattr(state, "clip_obs", 10.0))
    return ObservationNormalizer(rms.mean, np.sqrt(np.asarray(rms.var, dtype=np.float64) + eps), clip)


def _sb3_algo(path: Path, data: dict) -> str:
    """The algorithm of an RL-Zoo save: from its folder (``rl-zoo/<algo>/...``), else from the policy class module."""
    for part in reversed(path.parts[:-1]):
        if part.lower() in SB3_ALGOS:
            return part.lower()
    module = str((data.get("policy_class") or {}).get("__module__", ""))
    for algo in SB3_ALGOS:
        if f".{algo}." in module:
            return algo
    return "actor-critic" if "common.policies" in module else "unknown"


def _space_bounds(space: dict) -> tuple[list[float], list[float]]:
    """low/high of a Box described in SB3's data JSON (numpy-printed strings)."""

    def parse(text: object) -> list[float]:
        return [float(x) for x in str(text).replace("[", " ").replace("]", " ").split()]

    return parse(space.get("low", "")), parse(space.get("high", ""))


def _activation_name(text: str, path: Path) -> str | None:
    """'relu'/'tanh' from an SB3 activation_fn description (data JSON or config.yml), None when none is named."""
    match = re.search(
        r"activation_fn[^,)]*?(ReLU|Tanh|ELU|LeakyReLU|GELU|SiLU)\b|<class 'torch\.nn\.modules\.activation\.(\w+)'>",
        text,
    )
    if match is None:
        return None
    name = match.group(1) or match.group(2)
    if name not in ("ReLU", "Tanh"):
        raise PolicyLoadError(f"{path}: unsupported activation_fn {name}")
    return name.lower()


def _layers(sd: dict, prefix: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Linear layers ``{prefix}{i}.weight`` in index order (the Sequential's activations have no weights)."""
    idx = sorted({int(m.group(1)) for k in sd if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", k))})
    return [(sd[f"{prefix}{i}.weight"], sd.get(f"{prefix}{i}.bias")) for i in idx]


def load_sb3_zip(
    path: str | os.PathLike, deterministic: bool = False
) -> TanhGaussianPolicy | GaussianPolicy | LinearPolicy:
    """An RL-Zoo stable-baselines3 ``.zip`` (SAC, TQC, PPO, A2C, TRPO, ARS) as a numpy policy.

    ``policy.pth`` is read with ``torch.load(weights_only=True)`` and ``data`` as JSON (never its pickled fields).
    When the sibling ``<Env>/config.yml`` says ``normalize``, ``<Env>/vecnormalize.pkl`` supplies the statistics.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
            sd = torch.load(io.BytesIO(zf.read("policy.pth")), weights_only=True, map_location="cpu")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise PolicyLoadError(f"{path}: not a stable-baselines3 save with 'data' and 'policy.pth' ({e})") from e
    sd = {k: v.detach().cpu().numpy() for k, v in sd.items()}
    algo = _sb3_algo(path, data)
    if data.get("use_sde"):
        raise PolicyLoadError(f"{path}: gSDE policies (use_sde=True) are not supported")
    low, high = _space_bounds(data.get("action_space", {}))
    if low and (min(low) != -1.0 or max(high) != 1.0 or len(set(low)) != 1 or len(set(high)) != 1):
        raise PolicyLoadError(f"{path}: only action spaces [-1, 1] are supported, got low={low} high={high}")

    run_dir = path.parent / path.stem  # rl-zoo/<algo>/<Env>-v3_1/<Env>-v3/{config.yml, vecnormalize.pkl}
    config = _orderedish_yaml(run_dir / "config.yml") if (run_dir / "config.yml").is_file() else {}
    normalizer = None
    if config.get("normalize"):
        pkl = run_dir / "vecnormalize.pkl"
        if not pkl.is_file():
            raise PolicyLoadError(f"{path}: config.yml says normalize but {pkl} is missing")
        normalizer = _vecnormalize(pkl)
    time_steps = _time_feature_steps(config)
    common = {
        "kind": f"sb3-{algo}",
        "source": str(path),
        "normalizer": normalizer,
        "time_feature_max_steps": time_steps,
    }

    kwargs = {k: v for k, v in (data.get("policy_kwargs") or {}).items() if not k.startswith(":")}
    activation = _activation_name(str(kwargs.get("activation_fn", config.get("policy_kwargs", ""))), path)
    if "actor.mu.weight" in sd:  # SAC / TQC
        trunk = MLP(_layers(sd, "actor.latent_pi."), activation or "relu")
        mu = MLP([(sd["actor.mu.weight"], sd["actor.mu.bias"])], "relu")
        log_std = MLP([(sd["actor.log_std.weight"], sd["actor.log_std.bias"])], "relu")
        input_dim, action_dim = trunk.in_dim, mu.out_dim
        policy_cls, parts = TanhGaussianPolicy, {"trunk": trunk, "mu": mu, "log_std": log_std}
    elif "mlp_extractor.policy_net.0.weight" in sd:  # PPO / A2C / TRPO ActorCriticPolicy
        layers = _layers(sd, "mlp_extractor.policy_net.") + [(sd["action_net.weight"], sd["action_net.bias"])]
        net = MLP(layers, activation or "tanh")  # SB3's ActorCriticPolicy default is Tanh
        input_dim, action_dim = net.in_dim, net.out_dim
        policy_cls, parts = GaussianPolicy, {"net": net, "log_std": sd["log_std"]}
    elif set(sd) <= {"action_net.weight", "action_net.bias"} and "action_net.weight" in sd:  # ARS linear
        net = MLP([(sd["action_net.weight"], sd.get("action_net.bias"))], "relu")
        input_dim, action_dim = net.in_dim, net.out_dim
        policy_cls, parts = LinearPolicy, {"net": net}
    else:
        raise PolicyLoadError(
            f"{path}: unrecognised policy weights {sorted(sd)[:6]}... (expected SAC/TQC/PPO/A2C/TRPO/ARS)"
        )

    observation_dim = input_dim - (1 if time_steps is not None else 0)
    if normalizer is not None and len(normalizer.mean) != input_dim:
        raise PolicyLoadError(f"{path}: vecnormalize has {len(normalizer.mean)} dims but the network takes {input_dim}")
    if policy_cls is not LinearPolicy:
        common["deterministic"] = deterministic
    return policy_cls(observation_dim=observation_dim, action_dim=action_dim, **parts, **common)


def _text(value: Any) -> str:
    """An HDF5 string scalar (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def load_d4rl_policy(path: str | os.PathLike, deterministic: bool = False) -> TanhGaussianPolicy:
    """The rlkit tanh-Gaussian behaviour policy of a D4RL v2 file (``metadata/policy/{fc0,fc1,...,last_fc*}``)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "metadata/policy" not in f:
                raise PolicyLoadError(f"{path}: no 'metadata/policy' group (only D4RL medium/expert files carry one)")
            group = f["metadata/policy"]
            params = {
                name: (group[name]["weight"][()], group[name]["bias"][()])
                for name in group
                if isinstance(group[name], h5py.Group) and "weight" in group[name]
            }
            nonlinearity = _text(group["nonlinearity"][()]) if "nonlinearity" in group else "relu"
            distribution = (
                _text(group["output_distribution"][()]) if "output_distribution" in group else "tanh_gaussian"
            )
    except OSError as e:
        raise PolicyLoadError(f"{path}: not a readable HDF5 file ({e})") from e
    if nonlinearity != "relu" or distribution != "tanh_gaussian":
        raise PolicyLoadError(f"{path}: expected a relu tanh_gaussian policy, got {nonlinearity!r} {distribution!r}")
    hidden = sorted((k for k in params if re.fullmatch(r"fc\d+", k)), key=lambda k: int(k[2:]))
    if not hidden or "last_fc" not in params or "last_fc_log_std" not in params:
        raise PolicyLoadError(f"{path}: metadata/policy needs fc0.., last_fc and last_fc_log_std; has {sorted(params)}")
    trunk = MLP([params[k] for k in hidden], "relu")
    mu, log_std = MLP([params["last_fc"]], "relu"), MLP([params["last_fc_log_std"]], "relu")
    return TanhGaussianPolicy(
        trunk,
        mu,
        log_std,
        observation_dim=trunk.in_dim,
        action_dim=mu.out_dim,
        kind="d4rl-sac",
        source=str(path),
        deterministic=deterministic,
    )


def load_cs285_expert(path: str | os.PathLike, deterministic: bool = False) -> GaussianPolicy:
    """A Berkeley cs285 expert pickle: standardized obs → tanh MLP → Gaussian with ``logstdevs_1_Da``."""
    path = Path(path)
    params = safe_load_pickle(path)
    if not isinstance(params, dict) or "GaussianPolicy" not in params:
        keys = sorted(params)[:8] if isinstance(params, dict) else type(params).__name__
        raise PolicyLoadError(f"{path}: not a cs285 expert policy (expected a 'GaussianPolicy' dict, got {keys})")
    gp, nonlin = params["GaussianPolicy"], str(params.get("nonlin_type", "tanh"))
    if nonlin not in ACTIVATIONS:
        raise PolicyLoadError(f"{path}: unsupported nonlinearity '{nonlin}'")
    std = gp["obsnorm"]["Standardizer"]
    mean = np.asarray(std["mean_1_D"], dtype=np.float64)
    stdev = np.sqrt(np.maximum(0.0, np.asarray(std["meansq_1_D"], dtype=np.float64) - mean**2))
    hidden = gp["hidden"]["FeedforwardNet"]
    names = sorted(hidden, key=lambda k: int(k.split("_")[1]))

    def affine(layer: dict) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(layer["AffineLayer"]["W"]).T, layer["AffineLayer"]["b"]  # cs285 W is (in, out)

    layers = [affine(hidden[k]) for k in names] + [affine(gp["out"])]
    # cs285 applies the nonlinearity after every hidden layer and none after the output.
    net = MLP(layers, nonlin)
    return GaussianPolicy(
        net,
        gp["logstdevs_1_Da"],
        observation_dim=net.in_dim,
        action_dim=net.out_dim,
        kind="cs285-expert",
        source=str(path),
        normalizer=ObservationNormalizer(mean, stdev + 1e-6),
        deterministic=deterministic,
    )


def load_policy(path_or_spec: str | os.PathLike, action_dim: int | None = None, deterministic: bool = False) -> Policy:
    """Load a behaviour policy by file kind: SB3 ``.zip`` (or its RL-Zoo folder), cs285 ``.pkl``, D4RL ``.hdf5``,
    or the spec ``random`` / ``random:<action_dim>`` (``action_dim`` fills in the plain ``random``)."""
    spec = str(path_or_spec)
    if spec == "random" or spec.startswith("random:"):
        dim = int(spec.split(":", 1)[1]) if ":" in spec else action_dim
        if dim is None:
            raise PolicyLoadError("policy 'random' needs an action dimension: pass 'random:<action_dim>' or an env")
        return RandomPolicy(dim)
    path = Path(spec).expanduser()
    if path.is_dir():
        zips = sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise PolicyLoadError(
                f"{path}: a policy folder must hold exactly one stable-baselines3 .zip, found {len(zips)}"
            )
        path = zips[0]
    if not path.is_file():
        raise PolicyLoadError(f"policy file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return load_sb3_zip(path, deterministic=deterministic)
    if suffix == ".pkl":
        return load_cs285_expert(path, deterministic=deterministic)
    if suffix in (".hdf5", ".h5"):
        return load_d4rl_policy(path, deterministic=deterministic)
    raise PolicyLoadError(
        f"cannot load a policy from {path}: unknown file kind '{suffix or path.name}'; expected a stable-baselines3 "
        ".zip, a cs285 expert .pkl, a D4RL .hdf5 with metadata/policy, or 'random'"
    )


def check_policy_fits(policy: Policy, env_label: str, observation_dim: int, action_dim: int) -> None:
    """Raise one PolicyLoadError naming both sides when the policy's observation/action sizes differ from the env's."""
    pol_obs, pol_act = getattr(policy, "observation_dim", None), policy.action_dim
    if (pol_obs is not None and pol_obs != observation_dim) or pol_act != action_dim:
        raise PolicyLoadError(
            f"policy {policy.source} ({policy.kind}) takes observations of size {pol_obs} and gives actions of size "
            f"{pol_act}, but env {env_label} has observations of size {observation_dim} and actions of size "
            f"{action_dim}"
        )
