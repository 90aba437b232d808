"""Import weights of the original Diffuser code or of diffusers' UNet1DModel into a run folder of ours.

  python -m diffuser.tools.import_weights original --checkpoint state_800000.pt --env hopper-medium-v2
  python -m diffuser.tools.import_weights diffusers --folder hopper-medium-v2/unet --env hopper-medium-v2

The run's config.yaml is the paper preset for the env (``experiment=locomotion``, ``locomotion_value``,
``halfcheetah``, ``maze2d_umaze`` …, plus any ``key=value`` overrides given after the options); the architecture the
weights imply (dim, dim_mults, attention, and for the original N, horizon and action weight) must agree with it, or
the error names the override to add. Neither source saves the normalizer, so it is fitted on the env's dataset as
training would (Gaussian per dimension for locomotion, Limits for Maze2D). The folder is built beside ``--out`` and
renamed into place; an existing folder is never touched. Imported runs have no trainer_state.pt: they plan, they do
not resume training.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

import diffuser
from diffuser.config import TrainConfig
from diffuser.diffusion.normalization import scalar_statistics
from diffuser.models.key_maps import KINDS, Architecture, check_original_schedule, load_mapped
from diffuser.runs.checkpoint import read_config, save_checkpoint, write_config
from diffuser.runs.sources import read_diffusers, read_original
from diffuser.utils.files import atomic_path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NORMALIZATIONS = ("per-dimension", "diffusers-scalar")
# ---------------------------------------------------------------------------------------------------- config
def preset_overrides(env_name: str, kind: str) -> list[str]:
    """The paper preset of an env and model kind, as Hydra overrides of train.yaml."""
    family = env_name.split("-")[0]
    if family in ("hopper", "walker2d"):
        experiment = "locomotion"
    elif family == "halfcheetah":
        experiment = "halfcheetah"
    elif family == "maze2d" and len(env_name.split("-")) > 1 and env_name.split("-")[1] in ("umaze", "medium", "large"):
        if kind == "value":
            raise ValueError(f"{env_name}: Maze2D plans without a value model; only --kind diffusion imports")
        return [f"experiment=maze2d_{env_name.split('-')[1]}", f"env.name={env_name}"]
    else:
        raise ValueError(f"--env {env_name!r}: expected a D4RL name such as hopper-medium-v2, walker2d-medium-v2, "
                         "halfcheetah-medium-v2 or maze2d-umaze-v1")
    return [f"experiment={experiment}{'_value' if kind == 'value' else ''}", f"env.name={env_name}"]


def compose_preset(env_name: str, kind: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """train.yaml composed with the env's paper preset, then ``overrides`` (which win)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from diffuser.config import register_configs

    if not (CONFIGS / "train.yaml").is_file():
        raise FileNotFoundError(f"{CONFIGS / 'train.yaml'} not found: run from a checkout of this repository")
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
            cfg = compose(config_name="train", overrides=[*preset_overrides(env_name, kind), *overrides])
        config: TrainConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except (HydraException, OmegaConfBaseException) as e:
        raise ValueError(f"config overrides {list(overrides)}: {str(e).splitlines()[0]}") from None
    if config.model.kind != kind:
        raise ValueError(f"the weights hold a {kind} model but the config says model.kind={config.model.kind}")
    return config


def check_preset(arch: Architecture, config: TrainConfig, source: str) -> None:
    """The architecture the weights imply must be the config's; else name every difference and its override."""
    pairs = {
        "model.network": (config.model.network, "unet"),  # imported weights are the original's U-Net
        "model.dim": (config.model.dim, arch.dim),
        "model.dim_mults": (list(config.model.dim_mults), list(arch.dim_mults)),
        "model.attention": (config.model.attention, arch.attention),
        "horizon": (config.horizon, arch.horizon),
        "diffusion.n_diffusion_steps": (config.diffusion.n_diffusion_steps, arch.n_diffusion_steps),
        "diffusion.action_weight": (config.diffusion.action_weight, arch.action_weight),
        "diffusion.predict_epsilon": (config.diffusion.predict_epsilon, arch.predict_epsilon),
    }
    differ = [(key, ours, theirs) for key, (ours, theirs) in pairs.items() if theirs is not None and ours != theirs]
    if differ:
        text = "; ".join(f"{key} is {ours} in the config but {theirs} in the weights" for key, ours, theirs in differ)
        fix = " ".join(f"{key}={str(theirs).replace(' ', '').lower() if isinstance(theirs, (bool, list)) else theirs}"
                       for key, _, theirs in differ)
        raise ValueError(f"{source} does not fit the preset for {config.env.name}: {text}. Add the overrides: {fix}")


# ---------------------------------------------------------------------------------------------------- run folder
def write_run(out: Path, record: dict[str, Any], model: torch.nn.Module, step: int) -> Path:
    """config.yaml + checkpoints/step_XXXXXXX/model.safetensors, built in a temp folder and renamed to ``out``."""
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} already exists; imports never overwrite a folder: pass another --out")
    with atomic_path(out, folder=True, replace=False) as tmp:
        write_config(tmp, record)
        ckpt = save_checkpoint(tmp, step, model, {"step": step}, keep=0)
        (ckpt / "trainer_state.pt").unlink()  # no optimizer or data state to resume from
    return out


def import_weights(
    source: str,
    path: str | Path,
    env: str,
    *,
    kind: str | None = None,
    weights: str = "ema",
    normalization: str = "per-dimension",
    out: str | Path | None = None,
    exp_name: str = "imported",
    runs_root: str | Path = "runs",
    overrides: Sequence[str] = (),
) -> Path:
    """Convert one checkpoint (``source`` "original" or "diffusers") into a run folder; returns its path."""
    from diffuser.runs.build import build_model
    from diffuser.tasks import build_dataset, load_env_data

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"--normalization {normalization!r}: valid {list(NORMALIZATIONS)}")
    if source == "original":
        weights_in = read_original(Path(path), weights)
    elif source == "diffusers":
        weights_in = read_diffusers(Path(path), kind)
    else:
        raise ValueError(f"unknown source {source!r}; valid: original, diffusers")
    arch, where = weights_in.arch, weights_in.record["path"]
    if kind is not None and kind != arch.kind:
        raise ValueError(f"{where} holds a {arch.kind} model, not --kind {kind}")
    run_name = exp_name if arch.kind == "diffusion" else f"{exp_name}_value"
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{source}"
    out = Path(out) if out is not None else Path(runs_root) / env / run_name / stamp
    if out.exists():  # checked again when renaming into place; here before the dataset is loaded
        raise ValueError(f"{out} already exists; imports never overwrite a folder: pass another --out")
    config = compose_preset(env, arch.kind, overrides)
    config.exp_name, config.runs_root, config.run_dir = run_name, str(runs_root), str(out)
    check_preset(arch, config, where)

    data, dataset_path = load_env_data(config.env)
    dataset = build_dataset(data, config.env, horizon=config.horizon, kind=arch.kind)
    dims = {"observation_dim": dataset.observation_dim, "action_dim": dataset.action_dim,
            "transition_dim": dataset.transition_dim}
    if arch.transition_dim != dataset.transition_dim:
        raise ValueError(f"{where} takes transition_dim {arch.transition_dim} (its first conv's input channels) but "
                         f"{config.env.name}'s dataset {dataset_path} has action_dim {dataset.action_dim} + "
                         f"observation_dim {dataset.observation_dim} = {dataset.transition_dim}: import it with the "
                         "env it was trained on")
    model = build_model(arch.kind, dataset.normalizer, horizon=config.horizon, observation_dim=dataset.observation_dim,
                        action_dim=dataset.action_dim, model=config.model, diffusion=config.diffusion)
    if weights_in.schedule:
        check_original_schedule(weights_in.schedule, model.schedule, where)
    load_mapped(model.model, weights_in.state, where)
    normalizer_note = f"{config.env.normalizer} per dimension, fitted on {dataset_path}"
    if normalization == "diffusers-scalar":
        if config.env.normalizer != "gaussian":
            raise ValueError(f"--normalization diffusers-scalar needs env.normalizer=gaussian, not "
                             f"{config.env.normalizer}")
        mean, std = scalar_statistics(data, dataset.action_dim, dataset.observation_dim)
        model.normalizer.mean.copy_(mean)
        model.normalizer.std.copy_(std)
        normalizer_note = f"diffusers-scalar: one mean/std per key (actions, observations) of {dataset_path}"

    record = asdict(config)
    record.update(dims=dims, dataset_path=str(dataset_path), version=diffuser.__version__,
                  imported_from={**weights_in.record, "normalizer": normalizer_note})
    write_run(out, record, model.eval(), weights_in.step)
    return out


def plan_hint(env: str, out: Path, kind: str, exp_name: str | None, runs_root: Path) -> str:
    """The plan.py command for an imported run: by exp_name when it sits where plan.py looks, else by path."""
    if env.startswith("maze2d"):
        return f"python plan.py env=maze2d_{env.split('-')[1]} diffusion_run={out}"
    guide = " guide=halfcheetah" if env.startswith("halfcheetah") else (
        " guide=hopper_medium_expert" if env.startswith("hopper-medium-expert") else "")
    if exp_name is not None:
        pair = f"exp_name={exp_name}" + (f" runs_root={runs_root}" if str(runs_root) != "runs" else "")
    elif kind == "diffusion":
        pair = f"diffusion_run={out} value_run=<value run>"
    else:
        pair = f"diffusion_run=<diffusion run> value_run={out}"
    return f"python plan.py env=locomotion env.name={env} planner=locomotion{guide} {pair}"


def main(argv: list[str] | None = None) -> Path:
    """Command line: ``python -m diffuser.tools.import_weights {original,diffusers} ... --env NAME [key=value ...]``."""
    from diffuser.launch import user_errors

    parser = argparse.ArgumentParser(prog="python -m diffuser.tools.import_weights",
                                     description=__doc__.splitlines()[0])
    sources = parser.add_subparsers(dest="source", required=True)
    original = sources.add_parser("original", help="a state_*.pt of jannerm/diffuser")
    original.add_argument("--checkpoint", required=True, type=Path, help="state_*.pt ({'step', 'model', 'ema'})")
    original.add_argument("--weights", default="ema", choices=["ema", "model"],
                          help="which weights to import (default ema, as the original plans with)")
    hf = sources.add_parser("diffusers", help="a UNet1DModel folder (config.json + weights) or its pipeline folder")
    hf.add_argument("--folder", required=True, type=Path, help="unet/ or value_function/ (or the pipeline root)")
    hf.add_argument("--normalization", default="per-dimension", choices=NORMALIZATIONS,
                    help="per-dimension (what the weights were trained with; default) or diffusers-scalar "
                         "(ValueGuidedRLPipeline's one mean/std per key)")
    for sub in (original, hf):
        sub.add_argument("--env", required=True,
                         help="D4RL name whose dataset fits the normalizer, e.g. hopper-medium-v2")
        sub.add_argument("--kind", default=None, choices=KINDS,
                         help="expected model kind (default: read from the weights)")
        sub.add_argument("--out", default=None, type=Path,
                         help="new run folder (default runs_root/env/exp_name[_value]/<time>_<source>)")
        sub.add_argument("--exp-name", default="imported",
                         help="value runs go to <exp-name>_value, where plan.py exp_name=<exp-name> looks")
        sub.add_argument("--runs-root", default="runs", type=Path)
        sub.add_argument("overrides", nargs="*", help="Hydra overrides of the preset, e.g. env.dataset=/path.hdf5")
    args = parser.parse_args(argv)
    with user_errors():
        out = import_weights(
            args.source, args.checkpoint if args.source == "original" else args.folder, args.env, kind=args.kind,
            weights=getattr(args, "weights", "ema"), normalization=getattr(args, "normalization", "per-dimension"),
            out=args.out, exp_name=args.exp_name, runs_root=args.runs_root, overrides=args.overrides,
        )
    print(f"imported run: {out}")
    by_name = args.exp_name if args.out is None else None
    print(f"plan with: {plan_hint(args.env, out, read_config(out)['model']['kind'], by_name, args.runs_root)}")
    return out


if __name__ == "__main__":
    main()
