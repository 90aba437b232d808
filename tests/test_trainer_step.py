"""The trainer's step (fused Adam, foreach norm and EMA, values read every log_freq, on-device skip of a bad step)
learns what a plain loop learns, and a skipped step touches nothing."""

import json

import pytest
import torch

from conftest import locomotion_arrays
from diffuser.config import DiffusionConfig, ModelConfig, check_batch
from diffuser.data.sequence import SequenceDataset
from diffuser.runs.build import build_model
from diffuser.runs.logger import Logger
from diffuser.training.ema import EMA
from diffuser.training.trainer import BatchStream, NonFiniteLossError, Trainer


def tiny(seed=0):
    ds = SequenceDataset(locomotion_arrays(), horizon=8, normalizer="gaussian", use_padding=True)
    torch.manual_seed(seed)
    model = build_model("diffusion", ds.normalizer, horizon=8, observation_dim=3, action_dim=2,
                        model=ModelConfig(dim=8, dim_mults=[1, 4]), diffusion=DiffusionConfig(n_diffusion_steps=4))
    return model, ds


def test_300_steps_give_the_loss_curve_of_a_plain_loop(tmp_path):
    """The textbook loop with the same Adam kernel, batches (BatchStream, seed 0) and noise stream: the trainer's
    accumulation, norm, guard, EMA and deferred logging change nothing that is learned. (Fused against the
    single-tensor Adam: the next test; their last-bit differences grow over hundreds of noisy diffusion steps.)"""
    n_steps, lr = 300, 5e-3
    model, ds = tiny()
    torch.manual_seed(1)
    Trainer(model, ds, Logger(tmp_path, backend="disabled"), tmp_path, n_train_steps=n_steps, batch_size=4,
            gradient_accumulate_every=2, learning_rate=lr, log_freq=1, save_freq=n_steps, progress=False).train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [row["train/loss"] for row in rows]

    plain, _ = tiny()
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr, fused=True)
    batches = BatchStream(len(ds), 4, seed=0)
    torch.manual_seed(1)
    expected = []
    for _ in range(n_steps):
        total = 0.0
        for _ in range(2):
            loss, _ = plain(ds.get_batch(batches.next()))
            (loss / 2).backward()
            total += loss.item() / 2
        optimizer.step()
        optimizer.zero_grad()
        expected.append(total)
    assert len(trained) == n_steps
    torch.testing.assert_close(torch.tensor(trained), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert sum(expected[-50:]) < 0.9 * sum(expected[:50])  # it learned something


def test_fused_adam_is_the_single_tensor_update():
    torch.manual_seed(0)
    start, grads = torch.randn(1000), [torch.randn(1000) for _ in range(50)]
    finals = []
    for options in ({"foreach": False}, {"fused": True}):
        p = torch.nn.Parameter(start.clone())
        optimizer = torch.optim.Adam([p], lr=1e-3, **options)
        for g in grads:
            p.grad = g.clone()
            optimizer.step()
        finals.append(p.detach())
    assert (finals[0] - start).abs().max() > 0.01  # it moved
    torch.testing.assert_close(finals[1], finals[0], rtol=0, atol=1e-6)


class Quadratic(torch.nn.Module):
    """A loss with no noise: L(w) = mean over the batch's windows of (x · w)², with x a window's rows summed."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, dim))

    def forward(self, batch):
        return ((batch.trajectories.sum(1) @ self.w) ** 2).mean(), {}


@pytest.mark.parametrize("batch_size, accumulate", [(8, 1), (4, 2), (2, 4)])
def test_a_step_takes_the_gradient_of_the_mean_loss_over_all_its_windows(tmp_path, batch_size, accumulate):
    """batch_size × gradient_accumulate_every windows per step in any layout (the locomotion CPU presets take 64 × 1,
    the paper 32 × 2): the gradient is d/dw of the mean of (x · w)² over the same 8 windows, 2 x (x · w) averaged."""
    _, ds = tiny()
    model = Quadratic(ds.get_batch([0]).trajectories.shape[-1])
    w0 = model.w.detach().clone()
    trainer = Trainer(model, ds, Logger(tmp_path, backend="disabled"), tmp_path, n_train_steps=10,
                      batch_size=batch_size, gradient_accumulate_every=accumulate, log_freq=100, progress=False)
    seen = {}
    trainer.optimizer.step = lambda: seen.setdefault("grad", model.w.grad.clone())  # read it before zero_grad
    trainer.train_step()
    x = ds.get_batch(BatchStream(len(ds), 8, seed=0).next()).trajectories.sum(1).double()
    expected = (2 * x * (x @ w0.double())[:, None]).mean(0)
    torch.testing.assert_close(seen["grad"].double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size, accumulate, key",
                         [(0, 1, "batch_size=0"), (64, 0, "gradient_accumulate_every=0")])
def test_an_empty_step_is_refused_naming_the_key(batch_size, accumulate, key):
    with pytest.raises(ValueError, match=f"trainer.{key} must be at least 1"):
        check_batch(batch_size, accumulate)
    check_batch(64, 1)  # the locomotion CPU presets' layout passes


class NaNAt(torch.nn.Module):
    """The tiny model, whose loss is NaN on forward call ``n``."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, batch):
        self.calls += 1
        loss, info = self.inner(batch)
        return (loss * float("nan") if self.calls == self.n else loss), info


def test_a_skipped_step_touches_neither_weights_nor_adam_and_the_next_read_names_it(tmp_path):
    inner, ds = tiny()
    trainer = Trainer(NaNAt(inner, n=2), ds, Logger(tmp_path, backend="disabled"), tmp_path, n_train_steps=10,
                      batch_size=4, gradient_accumulate_every=1, log_freq=100, progress=False)
    trainer.train_step()
    trainer.step = 1
    after_first = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    moments = {k: v.clone() for k, v in trainer.optimizer.state[trainer.parameters[0]].items()}
    trainer.train_step()  # NaN: skipped on the device, nothing raised yet
    trainer.step = 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, after_first[k]), k
    for k, v in trainer.optimizer.state[trainer.parameters[0]].items():
        assert torch.equal(v, moments[k]), k  # step count and moments as they were
    trainer.train_step()  # a good step applies again
    trainer.step = 3
    final = "inner.model.final_conv.1.weight"
    assert not torch.equal(trainer.model.state_dict()[final], after_first[final])
    with pytest.raises(NonFiniteLossError, match="step 2: the loss is nan"):
        trainer.check_finite()


def test_ema_foreach_update_by_hand():
    model, ema_model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        for p in ema_model.parameters():
            p.fill_(0.0)
    EMA(0.75).update(ema_model, model)
    assert all(torch.allclose(p, torch.full_like(p, 0.25)) for p in ema_model.parameters())  # 0.75·0 + 0.25·1
