"""Entry-point helpers shared by train.py and plan.py."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


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
