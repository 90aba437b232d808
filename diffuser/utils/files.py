"""The one atomic writer: write under a temp name beside the target, then rename it into place.

A reader (or a crash) never sees a half-written file or folder under the final name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, *, folder: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temp file (or, with ``folder``, an empty temp folder) beside ``path`` to write into; on success it gets
    the usual permissions and is renamed to ``path``, on an error it is removed.

    The temp name starts with "." and keeps the suffix (writers that pick a format by extension still work). A
    folder already at ``path`` is replaced when ``replace`` (else the rename fails).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())  # mkstemp/mkdtemp make owner-only entries
        if folder and replace and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
