"""Run folders: config.yaml, checkpoints, load_run, the W&B logger (the only wandb import) and git info.

The rest of the package uses this layer; it imports no data, env, training, planning or task code."""
