"""W&B offline runs record the glossary's keys, names and summary, read back from the run's own .wandb file."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def run(script, *args, env_dir):
    env = {**os.environ, "D4RL_DATASET_DIR": str(env_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of the one offline W&B run under run_dir.

    A .wandb file is a 7-byte header (":W&B", magic, version) then a LevelDB-style log: 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4). `wandb sync` uploads the same
    records later.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer or zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
    return records


def logged(records) -> tuple[dict, dict, dict]:
    """(history key → list of (step, value_json), summary key → value_json, run fields) of the records.

    Media are stored flattened: an image logged as media/plan appears as media/plan/_type, media/plan/path, ...
    """
    history, summary, info = {}, {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item}
            step = int(items.get("_step", "-1"))
            for key, value in items.items():
                history.setdefault(key, []).append((step, value))
        elif kind == "summary":
            summary.update({(i.key or "/".join(i.nested_key)): i.value_json for i in record.summary.update})
        elif kind == "run":
            info = {"group": record.run.run_group, "name": record.run.display_name, "job_type": record.run.job_type,
                    "config": {i.key: i.value_json for i in record.run.config.update}}
    return history, summary, info


@pytest.mark.slow
def test_offline_runs_record_the_glossary_keys(tmp_path, maze2d_dir):
    run_dir = tmp_path / "runs" / "maze2d-umaze-v1" / "tiny" / "r"
    train = ["trainer=debug", "logger=wandb", f"run_dir={run_dir}", "exp_name=tiny", "model.dim=8",
             "diffusion.n_diffusion_steps=8"]
    run("train.py", *train, env_dir=maze2d_dir)
    history, summary, info = logged(wandb_records(run_dir))
    assert info["group"] == "maze2d-umaze-v1-tiny" and info["job_type"] == "train"
    assert info["name"] == "maze2d-umaze-v1__tiny__s0__r"
    assert json.loads(info["config"]["dims"])["transition_dim"] == 6  # the resolved config + derived dims
    for key in ["train/loss", "train/a0_loss", "train/lr", "train/grad_norm", "train/steps_per_sec"]:
        assert [step for step, _ in history[key]] == [1, 2, 3, 4], key
    # Sampled plans every sample_freq (2) steps: an image W&B stored in the run's files.
    assert history["media/plan/_type"] == [(2, '"image-file"'), (4, '"image-file"')]
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/media/plan_*.png"))
    assert (run_dir / "wandb_train_id.txt").is_file()

    run("plan.py", f"diffusion_run={run_dir}", "planner.n_episodes=3", "planner.max_episode_steps=5",
        "logger=wandb", env_dir=maze2d_dir)
    plan_dir = next((run_dir / "plans").iterdir())
    history, summary, info = logged(wandb_records(plan_dir))
    assert info["group"] == "maze2d-umaze-v1-tiny" and info["job_type"] == "plan"
    assert info["name"] == f"maze2d-umaze-v1__plan__s0__{plan_dir.name}"
    results = json.loads((plan_dir / "results.json").read_text())
    returns = [e["return"] for e in results["episodes"]]
    assert [(s, float(v)) for s, v in history["eval/episode_return"]] == list(enumerate(returns))
    assert len(history["eval/episode_normalized_score"]) == 3
    mean = results["summary"]["normalized_score_mean"]
    assert float(summary["eval/normalized_score"]) == pytest.approx(mean)
    assert float(summary["eval/normalized_score_se"]) == pytest.approx(results["summary"]["normalized_score_se"])
    assert int(summary["train_step"]) == 4 and int(summary["eval/n_episodes"]) == 3
    assert summary["eval/episodes/_type"] == '"table-file"' and int(summary["eval/episodes/nrows"]) == 3
    assert summary["media/rollout/_type"] == '"video-file"' and summary["media/plan/_type"] == '"image-file"'
    assert (plan_dir / "media" / "rollout.mp4").stat().st_size > 0


@pytest.mark.slow
def test_offline_value_run_records_value_metrics(tmp_path):
    from conftest import locomotion_arrays
    from diffuser.data.d4rl import write_d4rl

    write_d4rl(tmp_path / "hopper-medium-v2.hdf5", locomotion_arrays((60, 45), (True, False), 11, 3, seed=1))
    run_dir = tmp_path / "value"
    run("train.py", "experiment=locomotion_value", "trainer=debug", "logger=wandb", "model.dim=8",
        f"run_dir={run_dir}", env_dir=tmp_path)
    history, _, info = logged(wandb_records(run_dir))
    assert info["group"] == "hopper-medium-v2-paper_value" and info["job_type"] == "train"
    for key in ["value/loss", "value/corr", "value/pred_mean", "value/targ_mean", "value/lr", "value/grad_norm"]:
        assert [step for step, _ in history[key]] == [1, 2, 3, 4], key
    assert not [key for key in history if key.startswith("media/")]  # value models sample nothing
