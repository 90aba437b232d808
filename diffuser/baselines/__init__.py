"""Baselines trained and evaluated through the same train.py and plan.py: behaviour cloning."""
