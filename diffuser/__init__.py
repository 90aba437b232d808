"""Diffuser: planning with diffusion for flexible behavior synthesis (Janner et al., ICML 2022)."""

__version__ = "0.1.0"
