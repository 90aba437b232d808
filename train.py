"""Train a Diffuser model. `python train.py` trains the Maze2D U-Maze CPU preset; see configs/train.yaml.

Several GPUs: `torchrun --nproc_per_node=N train.py ...` (DDP; trainer.batch_size is the global micro-batch).
Sweeps: `python train.py -m seed=0,1,2` (one run folder per job; hydra/launcher=slurm on a cluster).
Launch, multirun folders, resume and error handling: diffuser/launch.py.
"""

import dataclasses

import hydra
from omegaconf import DictConfig

from diffuser import launch
from diffuser.config import TrainConfig

launch.configure()


@hydra.main(config_path="configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    from diffuser.runs.build import build_model
    from diffuser.tasks import build_dataset, task_for
    from diffuser.training.setup import open_train_run
    from diffuser.training.trainer import Trainer
    from diffuser.utils.seeding import resolve_device, seed_everything

    config, dist = launch.start_training(cfg)  # rank 0's run folder for every rank; an existing run resumes
    with launch.user_errors():  # bad input (missing data, wrong keys or dims) → one line, not a traceback
        task = task_for(config.env.name)
        task.check_training(config.env, config.horizon)  # e.g. plans too short to reach the goals
        seed_everything(config.seed)
        with dist.main_first():  # rank 0 generates a missing dataset before the other ranks read it
            data, dataset_path = task.load_data(config.env)
        dataset = build_dataset(data, config.env, horizon=config.horizon, kind=config.model.kind)
        model = build_model(
            config.model.kind, dataset.normalizer, horizon=config.horizon, observation_dim=dataset.observation_dim,
            action_dim=dataset.action_dim, model=config.model, diffusion=config.diffusion, iql=config.iql,
            discount=config.env.discount,
        )
    logger, sample_fn, t = None, None, config.trainer
    if dist.is_main:  # only rank 0 writes the run folder and makes the W&B run
        logger = open_train_run(config, dataset, dataset_path, dist.world_size)
        if config.model.kind == "diffusion":  # value, BC and IQL models sample nothing
            sample_fn = task.sample_fn(dataset, logger, config.run_dir, gym_version=config.env.gym_version,
                                       n_samples=t.n_samples, seed=config.seed)
    with launch.training(dist):  # divergence, a damaged checkpoint, another rank's failure → one line
        Trainer(
            model, dataset, logger, config.run_dir,
            **{k: v for k, v in dataclasses.asdict(t).items() if k != "n_samples"},
            device=dist.device(resolve_device(config.device)), seed=config.seed, sample_fn=sample_fn, dist=dist,
            metric_prefix="value" if config.model.kind == "value" else "train",
        ).train()
    if logger is not None:
        logger.finish()
    print(f"run folder: {config.run_dir}")


if __name__ == "__main__":
    launch.cli(main, TrainConfig, ranks=True)
