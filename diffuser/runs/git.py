"""Record the code version a run was made with."""

from __future__ import annotations

import subprocess
from pathlib import Path

from diffuser.utils.files import atomic_write_text


def _git(args: list[str], cwd: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


def write_git_info(run_dir: Path, repo_dir: Path | None = None) -> str:
    """Write git.txt (commit) and git.diff (uncommitted changes) into run_dir; returns the commit or ''."""
    repo_dir = repo_dir or Path(__file__).resolve().parents[2]
    commit = _git(["rev-parse", "HEAD"], repo_dir).strip()
    atomic_write_text(run_dir / "git.txt", (commit or "unknown (not a git checkout)") + "\n")
    atomic_write_text(run_dir / "git.diff", _git(["diff", "HEAD"], repo_dir))
    return commit
