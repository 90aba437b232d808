"""Trainer options beyond the paper: the learning-rate schedule (warm-up, cosine decay) and bf16 autocast.

The schedule's values are worked by hand; the trainer's use of them is read off Adam's first move, which is the
learning rate itself (Adam's bias-corrected first step is lr · g / (|g| + eps) ≈ lr · sign(g)).
"""

import math

import pytest
import torch
from torch import nn

from diffuser.diffusion.conditioning import Batch
from diffuser.runs.logger import Logger
from diffuser.training.trainer import Trainer, learning_rate_at


def test_learning_rate_schedule_by_hand():
    base, n, warmup = 1e-3, 100, 10
    # warm-up: steps 0..9 climb linearly to base (step k uses (k + 1) / 10 of it)
    assert learning_rate_at(0, base, n, "cosine", warmup) == pytest.approx(1e-4)
    assert learning_rate_at(4, base, n, "cosine", warmup) == pytest.approx(5e-4)
    assert learning_rate_at(9, base, n, "cosine", warmup) == pytest.approx(1e-3)
    # cosine over the 90 steps after warm-up: cos(0) = 1 at step 10, cos(pi/2) = 0 halfway (step 55), 0 at the end
    assert learning_rate_at(10, base, n, "cosine", warmup) == pytest.approx(1e-3)
    assert learning_rate_at(55, base, n, "cosine", warmup) == pytest.approx(5e-4)
    assert learning_rate_at(40, base, n, "cosine", warmup) == pytest.approx(base * 0.75)  # a third: (1 + cos(pi/3)) / 2
    assert learning_rate_at(100, base, n, "cosine", warmup) == pytest.approx(0.0, abs=1e-15)
    assert learning_rate_at(250, base, n, "cosine", warmup) == pytest.approx(0.0, abs=1e-15)  # trained past the end
    # constant, with and without warm-up
    assert learning_rate_at(0, base, n) == base and learning_rate_at(99, base, n) == base
    assert learning_rate_at(1, base, n, "constant", 4) == pytest.approx(5e-4)


class Recorder(nn.Module):
    """loss = ‖w − 1‖² through a Linear layer; records the dtype the layer computed in."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.dtypes: list[torch.dtype] = []

    def forward(self, batch):
        out = self.layer(batch.trajectories.reshape(-1, 2))
        self.dtypes.append(out.dtype)
        loss = ((out.float() - 1.0) ** 2).mean()
        return loss, {"loss": loss.item()}


class Windows:
    def __len__(self):
        return 8

    def get_batch(self, idx):
        return Batch(torch.ones(len(idx), 1, 2), {})


def make_trainer(tmp_path, **options):
    return Trainer(Recorder(), Windows(), Logger(tmp_path, backend="disabled"), tmp_path, n_train_steps=8,
                   batch_size=2, gradient_accumulate_every=1, log_freq=100, save_freq=100, progress=False, **options)


@pytest.mark.parametrize("warmup, first_lr", [(0, 1e-2), (4, 2.5e-3)])
def test_adam_first_move_is_the_scheduled_learning_rate(tmp_path, warmup, first_lr):
    trainer = make_trainer(tmp_path, learning_rate=1e-2, lr_schedule="cosine", lr_warmup_steps=warmup)
    before = trainer.model.layer.weight.detach().clone()
    trainer.train_step()
    moved = (trainer.model.layer.weight.detach() - before).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, first_lr), rtol=1e-4, atol=0)


def test_cosine_schedule_reaches_zero_at_the_last_step(tmp_path):
    trainer = make_trainer(tmp_path, learning_rate=1e-2, lr_schedule="cosine")
    trainer.train()
    # the last step (k = 7 of 8) used 1e-2 · (1 + cos(7π/8)) / 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * (1 + math.cos(7 * math.pi / 8)) / 2)


def test_bf16_autocasts_the_forward_and_keeps_float32_weights(tmp_path):
    trainer = make_trainer(tmp_path, bf16=True, learning_rate=1e-2)
    trainer.train()
    assert trainer.model.dtypes and set(trainer.model.dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in trainer.ema_model.parameters())
    plain = make_trainer(tmp_path / "fp32", learning_rate=1e-2)
    plain.train_step()
    assert plain.model.dtypes == [torch.float32]


@pytest.mark.parametrize("options, named", [
    ({"lr_schedule": "linear"}, "trainer.lr_schedule 'linear'"),
    ({"lr_warmup_steps": 8}, "trainer.lr_warmup_steps 8"),
    ({"lr_warmup_steps": -1}, "trainer.lr_warmup_steps -1"),
])
def test_bad_schedule_options_are_one_clear_error(tmp_path, options, named):
    with pytest.raises(ValueError, match=named):
        make_trainer(tmp_path, **options)
