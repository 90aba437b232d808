"""The step loop with EMA and resumable checkpoints, data-parallel training, run-folder setup for train.py."""
