"""The value model's loss and its targets, against their formulas worked by hand.

Loss (the original's ValueDiffusion with value_l2): mean over the batch of (V(x_t, t) − target)², with x_t the noised
window whose conditioned states are written back. Target: Σ_k γ^k r[start + k] to the end of the episode, with the
termination penalty on a terminal last step; the paper and the released value nets use γ = 0.997.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from conftest import locomotion_arrays
from diffuser.config import register_configs
from diffuser.diffusion.conditioning import Batch
from diffuser.diffusion.gaussian import ValueDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.tasks import build_dataset

H, OBS, ACT = 4, 3, 2
D = OBS + ACT
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
register_configs()


class FirstStateSum(nn.Module):
    """V = the sum of the first row's states: the conditioned entries, so V does not depend on the noise or t."""

    def forward(self, x, t):
        return x[:, 0, ACT:].sum(dim=-1, keepdim=True)


def test_value_loss_is_the_batch_mse_on_the_conditioned_noisy_input():
    value = ValueDiffusion(FirstStateSum(), IdentityNormalizer(D), horizon=H, observation_dim=OBS, action_dim=ACT,
                           n_diffusion_steps=5)
    x = torch.randn(6, H, D, generator=torch.Generator().manual_seed(0))
    state = torch.randn(6, OBS, generator=torch.Generator().manual_seed(1))  # not x's own first state
    target = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0, -1.0])
    loss, info = value(Batch(x, {0: state}, target))
    prediction = state.double().sum(dim=1).numpy()
    expected = np.mean((prediction - target.double().numpy()) ** 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert float(info["pred_mean"]) == pytest.approx(prediction.mean(), rel=1e-5)
    assert float(info["corr"]) == pytest.approx(np.corrcoef(prediction, target.numpy())[0, 1], rel=1e-5)


def value_preset(*overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return OmegaConf.to_object(compose(config_name="train", overrides=["experiment=locomotion_value",
                                                                           *overrides]))


def test_value_targets_of_the_paper_preset_by_hand():
    """Built as train.py builds them from experiment=locomotion_value: γ = 0.997, penalty −100 on the terminal step.
    Episode 1 ends in a terminal (rewards 1, 2, 3, 4), episode 2 in a timeout (10, 20, 30); windows start at
    0..L−2 (the original's range(max_start))."""
    config = value_preset()
    data = locomotion_arrays(lengths=(4, 3), terminal=(True, False), obs_dim=OBS, act_dim=ACT)
    data["rewards"] = np.array([1, 2, 3, 4, 10, 20, 30], np.float32)
    dataset = build_dataset(data, config.env, horizon=config.horizon, kind="value")
    targets = dataset.get_batch(np.arange(len(dataset))).values.double().numpy()
    g = 0.997
    expected = [
        1 + g * 2 + g**2 * 3 + g**3 * (4 - 100),
        2 + g * 3 + g**2 * (4 - 100),
        3 + g * (4 - 100),
        10 + g * 20 + g**2 * 30,  # a timeout: no penalty
        20 + g * 30,
    ]
    np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_value_targets_follow_the_configured_discount():
    """Another env.discount reaches the targets: (1, 2, 3) from start 0 with γ = 0.5 is 1 + 1 + 0.75."""
    config = value_preset("env.discount=0.5", "env.termination_penalty=0")
    data = locomotion_arrays(lengths=(3,), terminal=(False,), obs_dim=OBS, act_dim=ACT)
    data["rewards"] = np.array([1, 2, 3], np.float32)
    dataset = build_dataset(data, config.env, horizon=config.horizon, kind="value")
    assert dataset.get_batch(np.array([0, 1])).values.tolist() == [2.75, 3.5]


def test_standardized_value_targets_reach_the_dataset_and_the_run_record(tmp_path):
    """env.value_targets=standardized: targets (G − mean) / std, by hand for returns 2.75 and 3.5 (mean 3.125, std
    0.375), and config.yaml records the statistics to convert predictions back."""
    from diffuser.training.setup import record_config

    config = value_preset("env.discount=0.5", "env.termination_penalty=0", "env.value_targets=standardized",
                          f"run_dir={tmp_path}")
    data = locomotion_arrays(lengths=(3,), terminal=(False,), obs_dim=OBS, act_dim=ACT)
    data["rewards"] = np.array([1, 2, 3], np.float32)
    dataset = build_dataset(data, config.env, horizon=config.horizon, kind="value")
    np.testing.assert_allclose(dataset.get_batch(np.array([0, 1])).values.tolist(), [-1.0, 1.0], rtol=1e-6)
    record = record_config(config, dataset, tmp_path / "data.hdf5")
    assert record["value_target_statistics"] == pytest.approx({"mean": 3.125, "std": 0.375})
