"""The transformer denoiser option (model=temporal_transformer): shapes, its adaLN-Zero start, time conditioning,
inpainting through GaussianDiffusion, learning, the paper presets' refusal and saved runs."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, locomotion_arrays
from diffuser.config import PAPER_EXPERIMENTS, DiffusionConfig, ModelConfig, check_network, register_configs
from diffuser.data.sequence import SequenceDataset
from diffuser.diffusion.gaussian import GaussianDiffusion
from diffuser.diffusion.normalization import IdentityNormalizer
from diffuser.models import TemporalTransformer, TemporalUnet
from diffuser.runs.build import build_model
from diffuser.runs.load import load_run
from diffuser.runs.logger import Logger
from diffuser.training.setup import record_config
from diffuser.training.trainer import Trainer

CONFIGS = REPO / "configs"
register_configs()
OBS, ACT = 4, 2


def tiny_diffusion(horizon=8, seed=0, n_diffusion_steps=8) -> GaussianDiffusion:
    torch.manual_seed(seed)
    net = TemporalTransformer(horizon=horizon, transition_dim=OBS + ACT, width=16, depth=2, heads=2)
    return GaussianDiffusion(net, IdentityNormalizer(OBS + ACT), horizon=horizon, observation_dim=OBS,
                             action_dim=ACT, n_diffusion_steps=n_diffusion_steps)


def adam_steps(diffusion: GaussianDiffusion, x: torch.Tensor, n: int, lr=1e-2, optimizer=None):
    """n Adam steps of the diffusion loss on the fixed batch x (conditioned on its first state)."""
    optimizer = optimizer or torch.optim.Adam(diffusion.parameters(), lr=lr)
    for _ in range(n):
        loss, _ = diffusion.loss(x, {0: x[:, 0, ACT:]})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return OmegaConf.to_object(compose(config_name="train", overrides=overrides))


@pytest.mark.parametrize("horizon", [1, 2, 5, 13, 64, 100])
def test_output_has_the_input_shape_for_any_horizon(horizon):
    net = TemporalTransformer(horizon=32, transition_dim=OBS + ACT, width=16, depth=1, heads=4)
    for p in net.parameters():  # leave the zero start, so shapes are checked on a non-trivial map
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(3, horizon, OBS + ACT)
    assert net(x, torch.tensor([0, 4, 7])).shape == x.shape
    assert net(x, 5).shape == x.shape


def test_bad_inputs_and_settings_are_refused():
    net = TemporalTransformer(horizon=8, transition_dim=OBS + ACT, width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H ≥ 1, 6\)"):
        net(torch.randn(2, 8, 5), 0)
    with pytest.raises(ValueError, match="multiple of heads 3"):
        TemporalTransformer(horizon=8, transition_dim=6, width=16, depth=1, heads=3)
    with pytest.raises(ValueError, match="depth must be a positive int"):
        TemporalTransformer(horizon=8, transition_dim=6, width=16, depth=0, heads=2)


def test_untrained_network_returns_zero_and_its_blocks_are_identities():
    """adaLN-Zero: every gate and the output layer start at 0, so the output is exactly 0 whatever x and t."""
    net = tiny_diffusion().model
    x = torch.randn(4, 11, OBS + ACT)
    for t in (0, 3, torch.tensor([1, 2, 5, 7])):
        assert torch.equal(net(x, t), torch.zeros_like(x))
    h, c = torch.randn(4, 11, 16), torch.randn(4, 16)
    assert all(torch.equal(block(h, c), h) for block in net.blocks)


def test_time_reaches_the_output_from_the_second_step_and_matters_after_training():
    """Derived from the zero start: the first step moves only the output layer (every other gradient passes through
    its zero weights), so the output is non-zero but blind to t; from the second step the adaLN projections learn."""
    diffusion = tiny_diffusion()
    x = torch.rand(16, 8, OBS + ACT) * 2 - 1
    net = diffusion.model
    optimizer = adam_steps(diffusion, x, 1)
    with torch.no_grad():
        early, late = net(x, 0), net(x, 7)
    assert early.abs().max() > 0 and torch.equal(early, late)
    adam_steps(diffusion, x, 1, optimizer=optimizer)
    with torch.no_grad():
        assert not torch.allclose(net(x, 0), net(x, 7), rtol=0, atol=1e-6)
    adam_steps(diffusion, x, 30, optimizer=optimizer)
    with torch.no_grad():
        early, late = net(x, 0), net(x, 7)
    assert (early - late).abs().mean() > 0.05 * early.abs().mean()


def test_a_few_dozen_steps_lower_the_loss_on_a_fixed_batch():
    diffusion = tiny_diffusion(seed=1)
    ends = torch.rand(2, 16, 1, OBS + ACT, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = ends[0] + (ends[1] - ends[0]) * torch.linspace(0, 1, 8)[None, :, None]  # 16 straight-line trajectories

    def loss_at_fixed_noise() -> float:
        torch.manual_seed(123)  # the same steps t and noise at each evaluation
        with torch.no_grad():
            return sum(diffusion.loss(x, {0: x[:, 0, ACT:]})[0].item() for _ in range(4))

    before = loss_at_fixed_noise()
    adam_steps(diffusion, x, 60)
    assert loss_at_fixed_noise() < 0.7 * before  # 0.46 x at seed 1


@pytest.mark.parametrize("horizon", [8, 13])
def test_inpainted_sample_keeps_the_conditioned_states(horizon):
    """Start and goal are inpainted at every step, for the training horizon and for another one."""
    diffusion = tiny_diffusion(horizon=8)
    adam_steps(diffusion, torch.rand(8, 8, OBS + ACT) * 2 - 1, 3)  # a non-zero network
    start, goal = torch.rand(3, OBS) * 2 - 1, torch.rand(3, OBS) * 2 - 1
    sample = diffusion.conditional_sample({0: start, horizon - 1: goal}, horizon=horizon,
                                          generator=torch.Generator().manual_seed(0)).trajectories
    assert sample.shape == (3, horizon, OBS + ACT)
    assert torch.equal(sample[:, 0, ACT:], start) and torch.equal(sample[:, -1, ACT:], goal)
    assert not torch.equal(sample[:, 1, ACT:], torch.zeros(3, OBS))  # the rest is sampled


def test_maze2d_closed_loop_plans_every_length_with_one_transformer():
    """The closed-loop planner's lengths need no multiple of 8 (the network has no dim_mults), and can exceed the
    training horizon (sinusoidal positions)."""
    from diffuser.planning.maze2d import ClosedLoop, Maze2dPlanner, plan_lengths

    diffusion = tiny_diffusion(horizon=12, n_diffusion_steps=4)
    adam_steps(diffusion, torch.rand(8, 12, OBS + ACT) * 2 - 1, 3)
    horizons = plan_lengths([0.5, 0.75, 1.0, 1.5], diffusion)
    assert horizons == (6, 9, 12, 18)
    planner = Maze2dPlanner(diffusion, ClosedLoop(horizons=horizons, n_candidates=2, max_residual=0.1))
    starts, goals = torch.rand(3, OBS).numpy(), torch.rand(3, 2).numpy()
    plan = planner.plan(starts, goals, generator=torch.Generator().manual_seed(0))
    assert plan.observations.shape == (3, 18, OBS) and set(plan.lengths) <= set(horizons)
    for i, h in enumerate(plan.lengths):
        assert np.allclose(plan.observations[i, 0], starts[i], atol=1e-5)  # inpainted start
        assert np.allclose(plan.observations[i, h - 1, :2], goals[i], atol=1e-5)  # and goal, at the plan's end


def test_paper_presets_keep_the_unet_and_cpu_presets_take_the_transformer():
    experiments = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
    paper = [e for e in experiments if str(yaml.safe_load((CONFIGS / "experiment" / f"{e}.yaml").read_text())
                                              .get("exp_name", "")).startswith("paper")]
    assert sorted(PAPER_EXPERIMENTS) == paper  # every paper preset is refused, and names an existing CPU preset
    assert set(PAPER_EXPERIMENTS.values()) <= set(experiments)
    for experiment in paper:
        config = compose_train([f"experiment={experiment}", "model=temporal_transformer"])
        with pytest.raises(ValueError, match="keeps the paper's U-Net|value model is the paper's U-Net"):
            check_network(config.model.network, config.model.kind, experiment, config.exp_name)
    for experiment in ("maze2d_umaze_cpu", "maze2d_medium_cpu", "maze2d_large_cpu", "locomotion_cpu"):
        config = compose_train([f"experiment={experiment}", "model=temporal_transformer"])
        assert (config.model.network, config.model.width) == ("transformer", 64)
        check_network(config.model.network, config.model.kind, experiment, config.exp_name)
    with pytest.raises(ValueError, match="exp_name=paper names the paper's runs"):
        check_network("transformer", "diffusion", "maze2d_medium_cpu", "paper")
    with pytest.raises(ValueError, match="model.network=tf: valid"):
        check_network("tf", "diffusion")
    for kind in ("value", "bc", "iql", "invdyn"):
        with pytest.raises(ValueError, match=f"diffusion model only; model.kind={kind}"):
            build_model(kind, IdentityNormalizer(6), horizon=8, observation_dim=OBS, action_dim=ACT,
                        model=ModelConfig(kind=kind, network="transformer"), diffusion=DiffusionConfig())


def test_train_py_refuses_a_paper_preset_with_the_transformer_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "train.py", "experiment=maze2d_medium", "model=temporal_transformer", "logger=disabled",
         f"runs_root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "error: experiment=maze2d_medium is a paper preset and keeps the paper's U-Net; the transformer is an option "
        "of the CPU presets: pass experiment=maze2d_medium_cpu model=temporal_transformer"
    )
    assert not list(tmp_path.rglob("checkpoints"))


def train_tiny_run(run_dir: Path, model_overrides: list[str]):
    """A 4-step run (trainer=debug) of the composed train config, written as train.py writes it; returns its data."""
    config = compose_train([*model_overrides, "trainer=debug", "logger=disabled", f"run_dir={run_dir}", "horizon=8",
                            "diffusion.n_diffusion_steps=4"])
    dataset = SequenceDataset(locomotion_arrays(obs_dim=OBS, act_dim=ACT), horizon=8,
                              normalizer=config.env.normalizer, use_padding=True)
    torch.manual_seed(0)
    model = build_model("diffusion", dataset.normalizer, horizon=8, observation_dim=OBS, action_dim=ACT,
                        model=config.model, diffusion=config.diffusion)
    record_config(config, dataset, run_dir / "data.hdf5")
    trainer = {k: v for k, v in dataclasses.asdict(config.trainer).items() if k != "n_samples"}  # as train.py
    Trainer(model, dataset, Logger(run_dir, backend="disabled"), run_dir, **trainer, progress=False).train()
    return dataset


def test_saved_runs_reload_as_their_network_and_old_configs_as_the_unet(tmp_path):
    transformer_dir, unet_dir = tmp_path / "transformer", tmp_path / "unet"
    dataset = train_tiny_run(transformer_dir, ["model=temporal_transformer", "model.width=16", "model.depth=1",
                                               "model.heads=2"])
    run = load_run(transformer_dir)
    assert isinstance(run.model.model, TemporalTransformer) and run.step == 4
    assert (run.model.model.width, len(run.model.model.blocks)) == (16, 1)
    x = dataset.get_batch(torch.arange(3)).trajectories
    assert run.model.model(x, torch.tensor([0, 1, 3])).abs().max() > 0  # trained weights, not the zero start

    train_tiny_run(unet_dir, ["model.dim=8", "model.dim_mults=[1,2]"])
    saved = yaml.safe_load((unet_dir / "config.yaml").read_text())
    assert saved["model"]["network"] == "unet"
    for key in ("network", "width", "depth", "heads"):  # as written before model.network existed
        del saved["model"][key]
    (unet_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    run = load_run(unet_dir)
    assert isinstance(run.model.model, TemporalUnet) and run.model.model.dim_mults == (1, 2)
