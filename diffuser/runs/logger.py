"""Run logging: W&B (online or offline) or disabled, always mirrored to ``run_dir/metrics.jsonl``.

This is the only module that imports wandb. Callers hand it floats and numpy images/frames, never W&B objects.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

BACKENDS = ("wandb", "disabled")


class Logger:
    """log(metrics, step) / log_image / log_video / summary / finish, over W&B or nothing, plus metrics.jsonl."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        backend: str = "wandb",
        mode: str = "offline",
        project: str = "diffuser",
        entity: str | None = None,
        group: str | None = None,
        name: str | None = None,
        job_type: str = "train",
        config: Mapping[str, Any] | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown logger backend '{backend}'; valid: {list(BACKENDS)}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._run = None
        if backend == "wandb":
            import wandb

            id_file = self.run_dir / f"wandb_{job_type}_id.txt"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self._run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                name=name,
                job_type=job_type,
                dir=str(self.run_dir),
                config=dict(config or {}),
                mode=os.environ.get("WANDB_MODE", mode),
                id=run_id,
                resume="allow",
            )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars → W&B and one JSON line {"step": step, key: value}."""
        clean = {k: (float(v) if v is not None else None) for k, v in metrics.items()}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: _json_float(v) for k, v in clean.items()}}) + "\n")
        if self._run is not None:
            self._run.log(clean, step=int(step))

    def drop_after(self, step: int) -> None:
        """Remove metrics.jsonl rows with a step after ``step`` (and a torn last line), rewriting it atomically.

        A run resumed from a checkpoint at ``step`` logs the later steps again, so each step stays in the file once.
        """
        if not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _row_step(line) <= step]
        if len(kept) != len(lines):
            from diffuser.utils.files import atomic_write_text

            atomic_write_text(self.metrics_path, "".join(kept))

    def log_image(self, key: str, image: np.ndarray | str | Path, step: int) -> None:
        """An image, (H, W, C) uint8 array or a file path, to W&B (the caller keeps its own file in media/)."""
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Image(str(image) if isinstance(image, (str, Path)) else image)}, step=step)

    def log_video(self, key: str, video: np.ndarray | str | Path, fps: int, step: int) -> None:
        """A video: an MP4 file (the caller's copy in media/), or uint8 frames (T, H, W, C) encoded here with
        imageio-ffmpeg (W&B's own encoder would need moviepy)."""
        if self._run is None:
            return
        import wandb

        if not isinstance(video, (str, Path)):
            from diffuser.utils.rendering import save_video

            video = save_video(self.run_dir / "media" / f"{key.replace('/', '_')}_{step}.mp4", video, fps=fps)
        self._run.log({key: wandb.Video(str(video), format="mp4")}, step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table (e.g. one row per episode)."""
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values (e.g. the normalized score) into the run summary."""
        if self._run is not None:
            for k, v in values.items():
                self._run.summary[k] = v

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def _row_step(line: str) -> float:
    """The step of one metrics.jsonl line; +inf for a line that is not a complete JSON row (a torn write)."""
    try:
        return float(json.loads(line)["step"]) if line.endswith("\n") else math.inf
    except (ValueError, KeyError, TypeError):
        return math.inf


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)
