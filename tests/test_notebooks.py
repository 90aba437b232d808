"""The notebooks run top to bottom on tiny runs trained here, so they cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, locomotion_arrays
from diffuser.data.d4rl import write_d4rl
from test_smoke import run


def execute(name: str, env: dict[str, str]) -> list:
    """Run notebooks/<name> in a kernel that sees ``env``; returns the outputs of its code cells."""
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    # The kernel imports this checkout's diffuser, not whichever one the venv's editable install points at.
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def shown(outputs: list, mime: str) -> int:
    return sum(mime in o.get("data", {}) for o in outputs if o.get("output_type") in ("display_data", "execute_result"))


@pytest.mark.slow
def test_maze2d_tour(tmp_path, maze2d_dir):
    run_dir = tmp_path / "run"
    run("train.py", "trainer=debug", "logger=disabled", f"run_dir={run_dir}", "model.dim=8",
        "diffusion.n_diffusion_steps=4", env_dir=maze2d_dir)
    outputs = execute("01_maze2d_tour.ipynb", {"DIFFUSER_RUN": str(run_dir), "D4RL_DATASET_DIR": str(maze2d_dir)})
    assert shown(outputs, "image/png") == 3  # dataset segments, sampled plans, episodes
    assert shown(outputs, "text/html") == 1  # the embedded video
    assert (run_dir / "media" / "notebook_rollout.mp4").stat().st_size > 0


@pytest.mark.slow
def test_locomotion_tour(tmp_path):
    write_d4rl(tmp_path / "hopper-medium-v2.hdf5", locomotion_arrays((60, 45, 80), (True, False, True), 11, 3))
    base = ["trainer=debug", "trainer.sample_freq=0", "logger=disabled", "model.dim=8"]
    run("train.py", "experiment=locomotion_cpu", *base, f"run_dir={tmp_path / 'diffusion'}", env_dir=tmp_path)
    run("train.py", "experiment=locomotion_cpu_value", *base, f"run_dir={tmp_path / 'value'}", env_dir=tmp_path)
    env = {"DIFFUSER_RUN": str(tmp_path / "diffusion"), "DIFFUSER_VALUE_RUN": str(tmp_path / "value"),
           "D4RL_DATASET_DIR": str(tmp_path), "DIFFUSER_EPISODE_STEPS": "5"}
    outputs = execute("02_locomotion_tour.ipynb", env)
    assert shown(outputs, "image/png") == 3  # return histogram, dataset composites, the guided plan
    assert shown(outputs, "text/html") == 1
    assert (tmp_path / "diffusion" / "media" / "notebook_rollout.mp4").stat().st_size > 0


@pytest.mark.slow
def test_pipeline_tour(tmp_path):
    from test_pipeline import write_run_pair

    write_run_pair(tmp_path / "runs")  # tiny networks written in-process: no training needed to plan
    env = {"DIFFUSER_RUN": str(tmp_path / "runs" / "hopper-medium-v2" / "cpu"), "DIFFUSER_EPISODE_STEPS": "3"}
    outputs = execute("03_pipeline.ipynb", env)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert shown(outputs, "image/png") == 1  # the chosen plan
    assert "round trip bit-identical: True" in text and "diffusers UNet1DModel vs ours" in text
    assert "one env: (11,) → (3,)" in text and "DDIMScheduler(n_sample_steps=5, eta=0.5)" in text
