"""Entry-point helpers shared by train.py and plan.py."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

# What bad input raises: a missing file, a missing HDF5 key, a value or shape that does not fit.
USER_ERRORS = (FileNotFoundError, KeyError, ValueError)


@contextmanager
def user_errors(*errors: type[Exception]) -> Iterator[None]:
    """Report bad input (``errors``, default USER_ERRORS) as one line on stderr and exit 1.

    HYDRA_FULL_ERROR=1 shows the traceback instead.
    """
    try:
        yield
    except errors or USER_ERRORS as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"error: {message}") from None
