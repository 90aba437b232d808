"""EMA of the trainer, step by step on a three-parameter model, and the weights a checkpoint holds.

The rule (the original's Trainer.step_ema): every update_ema_every optimizer steps, a hard copy of the live weights
while the step is below step_start_ema, else ema ← decay·ema + (1 − decay)·θ. Here the expected EMA is computed
from the recorded live weights with that rule, in plain Python.
"""

import torch
from safetensors.torch import load_file
from torch import nn

from diffuser.diffusion.conditioning import Batch
from diffuser.runs.logger import Logger
from diffuser.training.trainer import Trainer


class ThreeWeights(nn.Module):
    """loss = ‖w − mean(batch)‖²: Adam moves w every step, so the live weights and their average differ."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

    def forward(self, batch):
        loss = ((self.w - batch.trajectories.mean()) ** 2).sum()
        return loss, {"loss": loss.item()}


class Windows:
    """Eight one-number windows holding their own index."""

    def __len__(self):
        return 8

    def get_batch(self, idx):
        return Batch(torch.as_tensor(idx, dtype=torch.float32).reshape(-1, 1, 1), {})


def test_ema_copies_then_averages_every_period_and_the_checkpoint_holds_it(tmp_path):
    decay, start, every, n_steps = 0.9, 6, 3, 12
    trainer = Trainer(ThreeWeights(), Windows(), Logger(tmp_path, backend="disabled"), tmp_path,
                      n_train_steps=n_steps, batch_size=2, gradient_accumulate_every=1, learning_rate=0.1,
                      ema_decay=decay, step_start_ema=start, update_ema_every=every, log_freq=100,
                      save_freq=n_steps, sample_freq=0, progress=False)
    live, ema = [trainer.model.w.detach().clone()], []
    train_step = trainer.train_step

    def recording_step():
        ema.append(trainer.ema_model.w.detach().clone())  # the EMA after the previous step
        info = train_step()
        live.append(trainer.model.w.detach().clone())  # θ_k after optimizer step k
        return info

    trainer.train_step = recording_step
    trainer.train()
    ema.append(trainer.ema_model.w.detach().clone())

    # By hand: step 3 copies (3 < 6); steps 6, 9, 12 average (6 is not below start); other steps keep the EMA.
    expected = [live[0]]
    for k in range(1, n_steps + 1):
        average = expected[-1]
        if k % every == 0:
            average = live[k] if k < start else decay * average + (1 - decay) * live[k]
        expected.append(average)
    for k in range(n_steps + 1):
        torch.testing.assert_close(ema[k], expected[k], msg=f"EMA after step {k}")
    assert torch.equal(ema[3], live[3]) and not torch.allclose(ema[12], live[12], atol=1e-3)

    saved = load_file(str(tmp_path / "checkpoints" / "step_0000012" / "model.safetensors"))
    torch.testing.assert_close(saved["w"], expected[12])  # the EMA weights, not the live ones
