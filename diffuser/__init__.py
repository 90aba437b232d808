"""Diffuser: planning with diffusion for flexible behavior synthesis (Janner et al., ICML 2022)."""

__version__ = "0.1.0"

_LAZY = {
    "ValueGuidedRLPipeline": "diffuser.planning.pipeline",
    "PipelineOutput": "diffuser.planning.pipeline",
    "DDPMScheduler": "diffuser.diffusion.schedulers",
    "DDIMScheduler": "diffuser.diffusion.schedulers",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    """``from diffuser import ValueGuidedRLPipeline``: imported on first use, so ``import diffuser`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffuser' has no attribute {name!r}")
