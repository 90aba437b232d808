"""The GPU path: the compiled (CUDA-graphed) train step and planner against eager ones, and batches gathered on the
device. These run wherever CUDA exists and are skipped elsewhere, with the reason."""

import numpy as np
import pytest
import torch

from conftest import locomotion_arrays
from diffuser.config import DiffusionConfig, ModelConfig
from diffuser.data.sequence import SequenceDataset
from diffuser.diffusion.guidance import ValueGuide
from diffuser.planning.guided import GuidedPlanner
from diffuser.runs.build import build_model
from diffuser.runs.logger import Logger
from diffuser.training.trainer import BatchStream, Trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA device (none on this machine)")]
CUDA = torch.device("cuda")


def tiny(kind="diffusion", seed=0):
    ds = SequenceDataset(locomotion_arrays(), horizon=8, normalizer="gaussian", use_padding=True)
    torch.manual_seed(seed)
    model = build_model(kind, ds.normalizer, horizon=8, observation_dim=3, action_dim=2,
                        model=ModelConfig(kind=kind, dim=8, dim_mults=[1, 4]),
                        diffusion=DiffusionConfig(n_diffusion_steps=4))
    return model, ds


def test_batches_are_gathered_on_the_device():
    _, ds = tiny()
    ds.to(CUDA)
    stream = BatchStream(len(ds), 4, seed=0, device=CUDA)
    idx = stream.next()
    batch = ds.get_batch(idx)
    assert idx.device.type == "cuda" and batch.trajectories.device.type == "cuda"
    cpu = SequenceDataset(locomotion_arrays(), horizon=8, normalizer="gaussian", use_padding=True)
    torch.testing.assert_close(batch.trajectories.cpu(), cpu.get_batch(idx.cpu().numpy()).trajectories)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_train_step_matches_eager(tmp_path, monkeypatch, mode):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "fallback_random", True)  # eager's random numbers inside the compiled loss
    losses = {}
    for compile in (None, mode):
        model, ds = tiny()
        trainer = Trainer(model, ds, Logger(tmp_path, backend="disabled"), tmp_path, n_train_steps=100, batch_size=4,
                          device=CUDA, progress=False, compile=compile)
        torch.manual_seed(1)
        losses[compile] = torch.stack([trainer.train_step()["loss"] for _ in range(5)]).cpu()
    torch.testing.assert_close(losses[mode], losses[None], rtol=1e-4, atol=1e-5)


def test_compiled_guided_planner_matches_eager():
    observations = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    plans = {}
    for compile in (None, "reduce-overhead"):
        diffusion, _ = tiny()
        value, _ = tiny("value")
        planner = GuidedPlanner(diffusion.to(CUDA), ValueGuide(value.model.to(CUDA)), batch_size=4, t_stopgrad=1,
                                warm_start_steps=3, compile=compile)
        generator = torch.Generator(device=CUDA).manual_seed(0)
        for _ in range(3):  # cold call, then warm-started calls
            plan = planner.plan(observations, generator=generator, env_ids=[0, 1, 2])
        plans[compile] = plan
    np.testing.assert_allclose(plans["reduce-overhead"].actions, plans[None].actions, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(plans["reduce-overhead"].values, plans[None].values, rtol=1e-3, atol=1e-4)
