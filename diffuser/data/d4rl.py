"""Read and write D4RL-layout HDF5 files: the project's one on-disk dataset format.

A D4RL file holds flat arrays of N rows: ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``
and optional nested groups such as ``infos/qpos`` or ``metadata/policy/fc0/weight``. The reader returns them as a
flat dict keyed by their HDF5 path, with (N, 1) columns squeezed and float64 cast to float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np

from diffuser.utils.files import atomic_path

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
NUMERIC_KINDS = "biuf"  # numpy dtype kinds the training arrays may have: bool, int, uint, float


class DatasetNotFoundError(FileNotFoundError):
    """No file for a dataset name; the message lists where we looked and how to make one."""


def dataset_dirs() -> list[Path]:
    """Directories searched for datasets by name: ``$D4RL_DATASET_DIR`` first, then ``~/.d4rl/datasets``."""
    dirs = []
    if os.environ.get("D4RL_DATASET_DIR"):
        dirs.append(Path(os.environ["D4RL_DATASET_DIR"]).expanduser())
    dirs.append(Path("~/.d4rl/datasets").expanduser())
    return dirs


def default_dataset_dir() -> Path:
    """Where generated datasets are written: the first of :func:`dataset_dirs`."""
    return dataset_dirs()[0]


def file_names(name: str) -> list[str]:
    """D4RL file names a dataset name may be stored under, most specific first.

    ``maze2d-umaze-v1`` → ``maze2d-umaze-sparse-v1.hdf5``; ``hopper-medium-v2`` → ``hopper_medium-v2.hdf5``.
    """
    names = [f"{name}.hdf5"]
    stem, _, version = name.rpartition("-")
    if stem.startswith("maze2d") and "dense" not in stem:
        names.insert(0, f"{stem}-sparse-{version}.hdf5")
    if stem and not stem.startswith("maze2d"):
        names.append(f"{stem.replace('-', '_')}-{version}.hdf5")
    return names


def find_dataset(name_or_path: str | os.PathLike, how_to_make: str = "") -> Path:
    """Resolve an existing file path, or a dataset name looked up in :func:`dataset_dirs`."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".hdf5", ".h5") or path.parent != Path("."):
        if path.is_file():
            return path
        looked = [path]
    else:
        looked = [d / f for d in dataset_dirs() for f in file_names(str(name_or_path))]
        for candidate in looked:
            if candidate.is_file():
                return candidate
    lines = "\n".join(f"  {p}" for p in looked)
    hint = f"\nTo make it: {how_to_make}" if how_to_make else ""
    raise DatasetNotFoundError(
        f"dataset '{name_or_path}' not found. Looked in:\n{lines}\n"
        f"Pass a path to a D4RL-layout HDF5 file, or set $D4RL_DATASET_DIR.{hint}"
    )


def load_d4rl(path: str | os.PathLike, required: Iterable[str] = REQUIRED_KEYS) -> dict[str, np.ndarray]:
    """Load every dataset of a D4RL-layout file into a flat dict keyed by HDF5 path.

    (N, 1) arrays are squeezed to (N,), float64 becomes float32, and each key in ``required`` must be present.
    Non-numeric training arrays (e.g. strings) and a file of 0 rows raise ValueError naming the key. A truncated
    or damaged file (including a chunk failing its fletcher32 checksum) and NaN/inf in the training arrays
    (``required`` keys and ``next_observations``) raise ValueError naming the file.
    """
    path = Path(path)
    data: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(key: str, node) -> None:
                if isinstance(node, h5py.Dataset):
                    data[key] = node[()]
            f.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError) as e:  # h5py reports damaged metadata as any of these
        raise ValueError(f"{path}: not a readable HDF5 file, truncated or damaged ({e})") from e
    missing = [k for k in required if k not in data]
    if missing:
        raise KeyError(f"{path}: missing required key(s) {missing}; present keys: {sorted(data)}")
    for key in (*required, "timeouts", "next_observations"):
        value = data.get(key)
        if value is not None and np.asarray(value).dtype.kind not in NUMERIC_KINDS:
            raise ValueError(
                f"{path}: '{key}' holds {np.asarray(value).dtype} values, not numbers; write it as a float, int or "
                "bool array"
            )
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            if value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            if value.dtype == np.float64:
                value = value.astype(np.float32)
            data[key] = value
    n = len(data["observations"]) if "observations" in data else None
    if n == 0:
        raise ValueError(f"{path}: 'observations' has 0 rows, the dataset is empty; regenerate or re-download it")
    for key in ("actions", "rewards", "terminals", "timeouts", "next_observations"):
        if n is not None and key in data and len(data[key]) != n:
            raise ValueError(f"{path}: '{key}' has {len(data[key])} rows but 'observations' has {n}")
    for key in (*required, "next_observations"):
        value = data.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            bad_rows = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))
            raise ValueError(
                f"{path}: '{key}' holds {int(np.isnan(value).sum())} NaN and {int(np.isinf(value).sum())} inf values "
                f"in {len(bad_rows)} of {len(value)} rows (first rows {bad_rows[:5].tolist()}); the file is damaged "
                "or was written from a diverged policy: regenerate or re-download it"
            )
    return data


def write_d4rl(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, str | int | float] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write arrays (keys may be nested, e.g. ``infos/qpos``) as a D4RL-layout HDF5 file, atomically.

    The file is written under a temporary name in the same directory and renamed, so a half-written file never
    exists under ``path``. ``attrs`` go to the root group (e.g. the generator and its seed). Arrays get HDF5's
    fletcher32 checksum, so a reader notices damaged data instead of returning altered values.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                value = np.asarray(value)
                opts: dict = {}
                if value.ndim > 0 and value.size > 1 and value.dtype.kind != "O":  # filters refuse variable-length data
                    opts = {"fletcher32": True, **({"compression": compression} if compression else {})}
                f.create_dataset(key, data=value, **opts)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
    return path
