"""Producers, each with a `python -m` command: behaviour-policy collection, Maze2D generation, Minari export,
checkpoint import and result aggregation. The library never needs them to train or plan."""
