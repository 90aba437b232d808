"""DDP training on CPU (gloo, 2 processes): sharding, gradient averaging, rank-0-only writes, resume, NaN guard.

The strongest check: a BC model (whose loss draws no random numbers) trained by `torchrun --nproc_per_node=2
train.py` follows the loss curve and ends at the weights of a 1-process run with the same global batch.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from diffuser.launch import drop_stray_job_folder, hydra_overrides_for_rank, user_errors
from diffuser.runs.checkpoint import CheckpointError, latest_checkpoint, load_trainer_state, save_checkpoint
from diffuser.runs.logger import Logger
from diffuser.training.distributed import Distributed, PeerError
from diffuser.training.trainer import BatchStream, NonFiniteLossError, Trainer
from test_reliability import metric_rows, tiny_diffusion

BC = ["experiment=locomotion_bc", "trainer=debug", "logger=disabled", "model.dim=16"]


def train(*args, nproc=1, data):
    """train.py on the tiny locomotion file, as one process or under torchrun with ``nproc`` gloo processes."""
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *launcher, "train.py", *BC, f"env.dataset={data}", *args], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"train.py failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve_and_resume(tmp_path, locomotion_file):
    # 69 windows, global batch 4 x 2 per step: 12 steps cross two epoch boundaries.
    reference = tmp_path / "reference"
    train("trainer.n_train_steps=12", f"run_dir={reference}", data=locomotion_file)

    hydra_files = [REPO / ".hydra", REPO / "train.log"]  # where rank 1's Hydra would write (hydra.run.dir=.)
    existed = [p.exists() for p in hydra_files]
    train("trainer.n_train_steps=8", f"runs_root={tmp_path / 'runs'}", nproc=2, data=locomotion_file)
    runs = list((tmp_path / "runs" / "hopper-medium-v2" / "bc").iterdir())
    assert len(runs) == 1, "both ranks train in rank 0's timestamped folder; only rank 0 makes it"
    ddp = runs[0]
    assert (ddp / ".hydra" / "config.yaml").is_file() and (ddp / "config.yaml").is_file()
    assert [p.exists() for p in hydra_files] == existed, "rank 1 wrote Hydra files"
    assert [r["step"] for r in metric_rows(ddp)] == list(range(1, 9)), "one row per step: only rank 0 logs"
    streams = load_trainer_state(latest_checkpoint(ddp))["rng_torch_ranks"]
    assert streams.shape[0] == 2 and not torch.equal(streams[0], streams[1]), "each rank keeps its own noise stream"

    out = train("trainer.n_train_steps=12", f"run_dir={ddp}", nproc=2, data=locomotion_file)
    assert out.stdout.count(" from step 8") == 1  # rank 0 resumes it; ranks > 0 print nothing
    got, want = metric_rows(ddp), metric_rows(reference)
    assert [r["step"] for r in got] == list(range(1, 13))
    for key in ("train/loss", "train/grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5, err_msg=key)
    final = {name: load_file(d / "checkpoints" / "step_0000012" / "model.safetensors") for name, d in
             (("ddp", ddp), ("reference", reference))}
    for key, value in final["reference"].items():
        torch.testing.assert_close(final["ddp"][key], value, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- in-process ranks (spawn)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world_size: int, port: int, out_dir: str, nan_at: int, save_fails_at: int) -> None:
    """One rank: train a tiny diffusion model for 6 steps, recording the indices of each get_batch call; rank 1's
    data turns NaN at get_batch call ``nan_at``; rank 0's checkpoint save fails at step ``save_fails_at``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = Distributed.start()
    try:
        model, ds = tiny_diffusion()
        get_batch, seen = ds.get_batch, []

        def recorded(indices):
            seen.append(torch.as_tensor(indices))
            batch = get_batch(indices)
            if rank == 1 and nan_at and len(seen) >= nan_at:
                batch.trajectories[:] = float("nan")
            return batch

        ds.get_batch = recorded
        if rank == 0 and save_fails_at:
            import diffuser.training.trainer as trainer_module

            def failing_save(run_dir, step, *args, **kwargs):
                if step >= save_fails_at:
                    raise CheckpointError(f"disk full at step {step}")
                return save_checkpoint(run_dir, step, *args, **kwargs)

            trainer_module.save_checkpoint = failing_save
        run_dir = Path(out_dir) / "run"
        logger = Logger(run_dir, backend="disabled") if dist.is_main else None
        trainer = Trainer(model, ds, logger, run_dir, n_train_steps=6, batch_size=4, gradient_accumulate_every=2,
                          step_start_ema=2, update_ema_every=1, log_freq=1, save_freq=2, keep_checkpoints=0,
                          progress=False, dist=dist)
        try:
            trainer.train()
            outcome = "done"
        except (NonFiniteLossError, CheckpointError, PeerError) as e:
            outcome = f"{type(e).__name__}: {e}"
        result = {"outcome": outcome, "step": trainer.step, "rng": torch.get_rng_state(), "indices": torch.stack(seen),
                  "model": trainer.model.state_dict(), "ema": trainer.ema_model.state_dict()}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.close()


def run_ranks(tmp_path: Path, nan_at: int = 0, save_fails_at: int = 0, world_size: int = 2,
              timeout: float = 120) -> list[dict]:
    context = torch.multiprocessing.start_processes(
        rank_main, args=(world_size, free_port(), str(tmp_path), nan_at, save_fails_at), nprocs=world_size, join=False,
        start_method="spawn",
    )
    deadline = time.time() + timeout
    while not context.join(timeout=1):
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {timeout} s (a rank left waiting in a collective)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


@pytest.mark.slow
def test_ranks_stay_in_sync_draw_their_own_noise_and_only_rank_0_writes(tmp_path):
    ranks = run_ranks(tmp_path)
    assert [r["outcome"] for r in ranks] == ["done", "done"]
    # Each micro-batch: rank 0 takes the first half of the global BatchStream batch, rank 1 the second half.
    stream = BatchStream(len(tiny_diffusion()[1]), batch_size=4, seed=0)
    want = torch.stack([torch.as_tensor(stream.next()) for _ in range(12)])
    assert ranks[0]["indices"].shape == (12, 2)
    assert torch.equal(torch.cat([ranks[0]["indices"], ranks[1]["indices"]], dim=1), want)
    for key in ranks[0]["model"]:
        assert torch.equal(ranks[0]["model"][key], ranks[1]["model"][key]), key
        assert torch.equal(ranks[0]["ema"][key], ranks[1]["ema"][key]), key
    assert not torch.equal(ranks[0]["rng"], ranks[1]["rng"]), "both ranks drew the same diffusion noise"
    run_dir = tmp_path / "run"
    assert [r["step"] for r in metric_rows(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "latest.txt", "step_0000002", "step_0000004", "step_0000006"]
    saved = load_file(run_dir / "checkpoints" / "step_0000006" / "model.safetensors")
    for key, value in saved.items():
        assert torch.equal(value, ranks[0]["ema"][key]), key


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # get_batch call 5 is the first micro-batch of step 3 (2 micro-batches per step) on rank 1 only.
    ranks = run_ranks(tmp_path, nan_at=5)
    assert [r["step"] for r in ranks] == [2, 2]
    assert "step 3: the loss is nan" in ranks[1]["outcome"]
    assert "step 3: the loss is not finite on another process" in ranks[0]["outcome"]
    assert all("step_0000002" in r["outcome"] for r in ranks)
    assert latest_checkpoint(tmp_path / "run").name == "step_0000002"
    assert [r["step"] for r in metric_rows(tmp_path / "run")] == [1, 2]


# ------------------------------------------------------------------------------------------ one process, fast
def test_shards_split_the_global_batch_and_one_process_changes_nothing():
    indices = np.arange(10, 22)
    shards = [Distributed(rank=r, world_size=3).shard(indices) for r in range(3)]
    assert [s.tolist() for s in shards] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 20, 21]]
    single = Distributed()
    assert single.shard(indices) is indices and single.mean({"a": 1.5}) == {"a": 1.5}
    assert single.any(True) and not single.any(False)
    assert single.broadcast_text("runs/x") == "runs/x" and single.on_main(lambda: 7, "testing") == 7
    with pytest.raises(ValueError, match=r"trainer.batch_size=4 \(the global micro-batch\) does not split evenly "
                                         r"over 3 processes; pass a multiple of 3"):
        Distributed(rank=0, world_size=3).check_batch_size(4)
    Distributed(rank=0, world_size=2).check_batch_size(4)


def test_ranks_above_0_write_no_hydra_files_and_exit_quietly_on_shared_errors(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    assert hydra_overrides_for_rank() == []
    monkeypatch.setenv("RANK", "1")
    assert "hydra.output_subdir=null" in hydra_overrides_for_rank()
    for error in (NonFiniteLossError("diverged"), PeerError("rank 0 failed")):
        with pytest.raises(SystemExit) as exit_info, user_errors(NonFiniteLossError, PeerError):
            raise error
        assert exit_info.value.code == 1  # rank 0 prints the line for every rank
    with pytest.raises(SystemExit, match="error: bad file"), user_errors():
        raise ValueError("bad file")  # an error of this rank alone is still printed
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="error: diverged"), user_errors(NonFiniteLossError):
        raise NonFiniteLossError("diverged")


def test_a_rank_drops_only_its_own_hydra_only_job_folder(tmp_path):
    agreed, stray, busy = tmp_path / "agreed", tmp_path / "stray", tmp_path / "busy"
    for folder in (agreed, stray, busy):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "train.log").write_text("")
    (busy / "config.yaml").write_text("")
    drop_stray_job_folder(str(stray), str(agreed))
    drop_stray_job_folder(str(busy), str(agreed))
    drop_stray_job_folder(str(agreed), str(agreed))
    assert not stray.exists() and busy.is_dir() and agreed.is_dir()


@pytest.mark.slow
def test_a_failed_save_on_rank_0_stops_every_rank(tmp_path):
    ranks = run_ranks(tmp_path, save_fails_at=4)
    assert [r["step"] for r in ranks] == [4, 4]
    assert ranks[0]["outcome"] == "CheckpointError: disk full at step 4"
    assert ranks[1]["outcome"] == "PeerError: rank 0 failed while saving the checkpoint of step 4; its error is above"
    assert latest_checkpoint(tmp_path / "run").name == "step_0000002"
