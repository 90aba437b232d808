"""Operations around train.py and plan.py, kept out of their reading path: argv checks before Hydra, Hydra and
MuJoCo set-up, distributed launch (torchrun / SLURM tasks), multirun job folders, resume, and one-line errors for
bad input.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from diffuser.config import (PlanConfig, TrainConfig, check_batch, check_locomotion_experiment, check_network,
                             register_configs, resolve_guide, resolve_warm_start)


def configure() -> None:
    """Register the config schemas with Hydra; offscreen MuJoCo rendering where there is no display (read when
    mujoco is first imported)."""
    register_configs()
    if "DISPLAY" not in os.environ:
        os.environ.setdefault("MUJOCO_GL", "egl")


def cli(main: Callable[[], None], schema: type, *, ranks: bool = False) -> None:
    """Run a Hydra ``main`` from the command line: unknown options are refused first with the valid ones listed;
    with ``ranks``, torchrun ranks > 0 write no Hydra files."""
    check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], schema)
    if ranks:
        sys.argv += hydra_overrides_for_rank()
    main()


def hydra_overrides_for_rank() -> list[str]:
    """Hydra overrides for torchrun ranks > 0: no .hydra folder or log file (rank 0's run folder holds them)."""
    if os.environ.get("RANK", "0") == "0":
        return []
    return ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout"]


# What bad input raises: a missing file, a missing HDF5 key, a value or shape that does not fit.
USER_ERRORS = (FileNotFoundError, KeyError, ValueError)


@contextmanager
def user_errors(*errors: type[Exception]) -> Iterator[None]:
    """Report bad input (``errors``, default USER_ERRORS) as one line on stderr and exit 1.

    HYDRA_FULL_ERROR=1 shows the traceback instead. Under torchrun, an error that every rank raises together
    (``every_rank = True`` on its class) is printed by rank 0 only; the other ranks exit 1 quietly.
    """
    try:
        yield
    except errors or USER_ERRORS as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if getattr(e, "every_rank", False) and os.environ.get("RANK", "0") != "0":
            raise SystemExit(1) from None
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"error: {message}") from None


# Hydra launchers of the `cluster` extra: hydra/launcher option → the plugin package that provides it.
LAUNCHER_PLUGINS = {
    "slurm": "hydra-submitit-launcher",  # configs/hydra/launcher/slurm.yaml, over submitit_slurm
    "submitit_slurm": "hydra-submitit-launcher",
    "submitit_local": "hydra-submitit-launcher",
    "joblib": "hydra-joblib-launcher",
}


def check_overrides(overrides: list[str], schema: type, extra_groups: tuple[str, ...] = ("experiment",)) -> None:
    """Reject an override of an unknown key with a message listing the valid keys at that level, and a launcher
    whose plugin is not installed with the pip command that installs it.

    Hydra would refuse both too, but without saying what the valid options are or what to install.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra reports syntax errors itself
    for override in parsed:
        key = override.key_or_group
        if key == "hydra/launcher" and not override.is_sweep_override():
            check_launcher(str(override.value()))
        skip = key.startswith("hydra") or "/" in key or key in extra_groups
        if override.is_add() or override.is_delete() or skip:
            continue
        node: Any = schema
        for part in key.split("."):
            if not dataclasses.is_dataclass(node):
                break
            fields = {f.name: f for f in dataclasses.fields(node)}
            if part not in fields:
                where = key.rsplit(".", 1)[0] if "." in key else "the top level"
                raise SystemExit(
                    f"unknown config option '{key}'. Valid options of {where}: {', '.join(sorted(fields))}"
                )
            node = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING else None
            node = type(node) if dataclasses.is_dataclass(node) else None


def check_launcher(name: str) -> None:
    """Exit with one line naming the package to install when hydra/launcher=``name`` needs a missing plugin."""
    import importlib.util

    package = LAUNCHER_PLUGINS.get(name)
    if package is None:
        return
    try:
        found = importlib.util.find_spec(f"hydra_plugins.{package.replace('-', '_')}") is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        found = False
    if not found:
        raise SystemExit(f"hydra/launcher={name} needs the {package} package: pip install -e '.[cluster]' "
                         f"(or pip install {package})")


def job_run_dir(run_dir: str) -> str:
    """In a multirun (-m), the folder Hydra made for this job (hydra.sweep.subdir of train.yaml), unless run_dir was
    given on the command line: parallel jobs with the same seed then never share (and resume) one run folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return run_dir
    hydra = HydraConfig.get()
    given = any(o.lstrip("+~").split("=")[0] == "run_dir" for o in hydra.overrides.task)
    return hydra.runtime.output_dir if hydra.mode == RunMode.MULTIRUN and not given else run_dir


def drop_stray_job_folder(own: str, agreed: str) -> None:
    """Remove the folder Hydra made for this rank when it differs from rank 0's (SLURM tasks compose the config
    one by one, so their timestamped job folders can differ by a second); only Hydra's own files are in it."""
    path = Path(own)
    if path.resolve() != Path(agreed).resolve() and path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names <= {".hydra", "train.log"}:
            shutil.rmtree(path, ignore_errors=True)


def start_training(cfg: DictConfig):
    """The typed train config of this process and its ``Distributed``: every rank trains in rank 0's run folder (a
    multirun job's own folder), an existing run folder is resumed with its saved config, and the global batch must
    split evenly over the ranks."""
    from hydra.core.hydra_config import HydraConfig

    from diffuser.training.distributed import Distributed
    from diffuser.training.setup import resume_config

    with user_errors():  # a locomotion preset on a dataset the original trains with other settings, or a paper
        #   preset with the transformer → one line
        experiment = HydraConfig.get().runtime.choices.get("experiment")
        check_locomotion_experiment(experiment, cfg.env.name)
        check_network(cfg.model.network, cfg.model.kind, experiment, cfg.exp_name)
        check_batch(cfg.trainer.batch_size, cfg.trainer.gradient_accumulate_every)
    dist = Distributed.start()  # torchrun (or SLURM tasks): one process per device; otherwise a single process
    with user_errors():
        config: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        own_dir = job_run_dir(config.run_dir)
        config.run_dir = dist.broadcast_text(own_dir)  # every rank uses rank 0's folder
        if not dist.is_main:
            drop_stray_job_folder(own_dir, config.run_dir)
        config = resume_config(config)
        dist.check_batch_size(config.trainer.batch_size)
    return config, dist


@contextmanager
def training(dist: Any) -> Iterator[None]:
    """Divergence, a damaged checkpoint, another rank's failure → one line, exit 1; the process group closes."""
    from diffuser.runs.checkpoint import CheckpointError
    from diffuser.training.distributed import PeerError
    from diffuser.training.trainer import NonFiniteLossError

    with user_errors(NonFiniteLossError, CheckpointError, PeerError):
        finished = False
        try:
            yield
            finished = True
        finally:
            dist.close(wait_for_peers=finished)


def plan_config(cfg: DictConfig) -> PlanConfig:
    """The typed plan config, with an unset guide scale / t_stopgrad filled with the original's for the dataset, then
    an unset warm start from the guide's t_stopgrad."""
    config: PlanConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    guide = resolve_guide(config.guide, config.env.name)
    return dataclasses.replace(config, guide=guide, planner=resolve_warm_start(config.planner, guide))
