"""Train a Diffuser model. `python train.py` trains the Maze2D U-Maze CPU preset; see configs/train.yaml.

Several GPUs: `torchrun --nproc_per_node=N train.py ...` (DDP; trainer.batch_size is the global micro-batch).
Sweeps: `python train.py -m seed=0,1,2` (one run folder per job; hydra/launcher=slurm on a cluster).
"""

import dataclasses
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from diffuser.config import TrainConfig, check_overrides, check_paper_experiment, register_configs
from diffuser.utils.cli import hydra_overrides_for_rank, user_errors

register_configs()
if "DISPLAY" not in os.environ:  # offscreen MuJoCo rendering of sampled plans (read when mujoco is imported)
    os.environ.setdefault("MUJOCO_GL", "egl")


@hydra.main(config_path="configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    with user_errors():  # a paper preset on a dataset the original trains with other settings → one line
        check_paper_experiment(HydraConfig.get().runtime.choices.get("experiment"), cfg.env.name)
    from diffuser.build import build_dataset, load_env_data
    from diffuser.runs.build import build_model
    from diffuser.training.distributed import Distributed, PeerError
    from diffuser.training.setup import (
        drop_stray_job_folder, job_run_dir, make_sample_fn, record_config, resume_config,
    )
    from diffuser.training.trainer import NonFiniteLossError, Trainer
    from diffuser.runs.checkpoint import CheckpointError
    from diffuser.runs.git import write_git_info
    from diffuser.runs.logger import Logger
    from diffuser.utils.seeding import resolve_device, seed_everything

    dist = Distributed.start()  # torchrun (or SLURM tasks): one process per device; otherwise a single process
    with user_errors():  # bad input (missing data, wrong keys or dims) → one line, not a traceback
        config = OmegaConf.to_object(cfg)
        own_dir = job_run_dir(config.run_dir)
        config.run_dir = dist.broadcast_text(own_dir)  # every rank uses rank 0's folder
        if not dist.is_main:
            drop_stray_job_folder(own_dir, config.run_dir)
        config = resume_config(config)
        dist.check_batch_size(config.trainer.batch_size)
        seed_everything(config.seed)
        with dist.main_first():  # rank 0 generates a missing dataset before the other ranks read it
            data, dataset_path = load_env_data(config.env)
        dataset = build_dataset(data, config.env, horizon=config.horizon, kind=config.model.kind)
        model = build_model(
            config.model.kind, dataset.normalizer, horizon=config.horizon, observation_dim=dataset.observation_dim,
            action_dim=dataset.action_dim, model=config.model, diffusion=config.diffusion,
        )
    run_dir = Path(config.run_dir)
    logger, sample_fn = None, None
    if dist.is_main:  # only rank 0 writes the run folder and makes the W&B run
        record = record_config(config, dataset, dataset_path)
        record["git_commit"] = write_git_info(run_dir)
        record["world_size"] = dist.world_size
        logger = Logger(
            run_dir, **dataclasses.asdict(config.logger), job_type="train", config=record,
            group=f"{config.env.name}-{config.exp_name}",
            name=f"{config.env.name}__{config.exp_name}__s{config.seed}__{run_dir.name}",
        )
        sample_fn = make_sample_fn(
            dataset, logger, run_dir, model_kind=config.model.kind, env_name=config.env.name,
            gym_version=config.env.gym_version, n_samples=config.trainer.n_samples, seed=config.seed,
        )
    trainer_kwargs = {k: v for k, v in dataclasses.asdict(config.trainer).items() if k != "n_samples"}
    # Divergence, a damaged checkpoint, another rank's failure → one line, exit 1.
    with user_errors(NonFiniteLossError, CheckpointError, PeerError):
        try:
            Trainer(
                model, dataset, logger, run_dir, **trainer_kwargs, device=dist.device(resolve_device(config.device)),
                seed=config.seed, metric_prefix="value" if config.model.kind == "value" else "train",
                sample_fn=sample_fn, dist=dist,
            ).train()
        finally:
            dist.close()
    if logger is not None:
        logger.finish()
    print(f"run folder: {run_dir}")


if __name__ == "__main__":
    check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], TrainConfig)
    sys.argv += hydra_overrides_for_rank()  # torchrun ranks > 0 write no Hydra files
    main()
