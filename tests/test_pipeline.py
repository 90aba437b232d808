"""ValueGuidedRLPipeline (diffuser/planning/pipeline.py): diffusers' constructor and call over our planner, the
diffusers folder layout both ways, the run pair a path names, and diffusers' own pipeline in compatibility mode.

diffusers is in the dev extra: its UNet1DModel, DDPMScheduler and ValueGuidedRLPipeline are the independent side."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import gymnasium
import numpy as np
import pytest
import torch

from diffuser import DDIMScheduler, DDPMScheduler, PipelineOutput, ValueGuidedRLPipeline
from diffuser.diffusion.normalization import GaussianNormalizer
from diffuser.runs.build import build_model
from diffuser.tools.import_weights import compose_preset, write_run

OBS, ACT, H, N = 11, 3, 8, 5
TINY = ["model.dim=32", "model.dim_mults=[1,2]", f"horizon={H}", f"diffusion.n_diffusion_steps={N}"]


def dataset(seed=0, size=400) -> dict[str, np.ndarray]:
    """Hopper-shaped data whose dimensions have different means and scales (so per-dimension ≠ scalar)."""
    rng = np.random.default_rng(seed)
    return {"observations": (rng.normal(size=(size, OBS)) * np.linspace(0.5, 4, OBS) + np.arange(OBS)).astype(
                np.float32),
            "actions": rng.uniform(-1, 1, size=(size, ACT)).astype(np.float32) * np.array([0.3, 1.0, 0.6], np.float32),
            "rewards": rng.normal(size=size).astype(np.float32)}


def models(seed=0, value_horizon=H):
    """A diffusion and a value model of the tiny preset (dim 32 so that the value bottleneck keeps 2 channels per
    GroupNorm group at batch 1), random weights, one normalizer fitted per dimension."""
    torch.manual_seed(seed)
    data = dataset(seed)
    normalizer = GaussianNormalizer(OBS + ACT).fit(np.concatenate([data["actions"], data["observations"]], 1))
    built = []
    for kind, horizon in (("diffusion", H), ("value", value_horizon)):
        config = compose_preset("hopper-medium-v2", kind, [*TINY, f"horizon={horizon}"])
        model = build_model(kind, normalizer, horizon=horizon, observation_dim=OBS, action_dim=ACT,
                            model=config.model, diffusion=config.diffusion)
        with torch.no_grad():  # weights far from init, so the guide gradient and the denoiser both matter
            for p in model.model.parameters():
                p.add_(0.2 * torch.randn(p.shape))
        built.append((model.eval(), config))
    return built


@pytest.fixture(scope="module")
def pair():
    (unet, _), (value, _) = models()
    return unet, value


class StandInHopper:
    """What diffusers' pipeline reads from a D4RL env: the spaces and get_dataset()."""

    def __init__(self, seed=0):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
        self.data = dataset(seed)

    def get_dataset(self):
        return self.data


class SpacesOnly(StandInHopper):
    get_dataset = None  # a gymnasium env: spaces, no dataset


def observations(n=3, seed=5):
    return (np.random.default_rng(seed).normal(size=(n, OBS)) + np.arange(OBS)).astype(np.float32)


def test_one_observation_one_action_n_observations_n_actions(pair):
    unet, value = pair
    pipeline = ValueGuidedRLPipeline(value, unet, None, "hopper-medium-v2")
    obs = observations()
    assert pipeline(obs[0], batch_size=4).shape == (ACT,)
    out = pipeline(obs, batch_size=4, return_plan=True, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PipelineOutput) and out.actions.shape == (3, ACT) and out.plan.values.shape == (3,)
    # every env's chosen plan starts at its own observation and is the plan whose first action is returned
    np.testing.assert_allclose(out.plan.observations[:, 0], obs, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out.actions, out.plan.actions[:, 0])
    # what diffusers' pipeline cannot do: one candidate, and no guide step (the value still ranks)
    assert pipeline(obs[0], batch_size=1).shape == (ACT,)
    assert pipeline(obs, batch_size=2, n_guide_steps=0).shape == (3, ACT)
    assert pipeline(torch.as_tensor(obs), batch_size=2, num_inference_steps=2, warm_start=1).shape == (3, ACT)
    assert pipeline(obs, batch_size=2, warm_start=1).shape == (3, ACT)  # from the previous call's plans


@pytest.mark.parametrize("scheduler", [DDPMScheduler(), DDIMScheduler(3, eta=0.5)])
def test_save_pretrained_then_from_pretrained_gives_bit_identical_actions(tmp_path, pair, scheduler):
    unet, value = pair
    pipeline = ValueGuidedRLPipeline(value, unet, scheduler, "hopper-medium-v2")
    before = pipeline(observations(), batch_size=4, generator=torch.Generator().manual_seed(3))
    pipeline.save_pretrained(tmp_path / "pipe")
    loaded = ValueGuidedRLPipeline.from_pretrained(tmp_path / "pipe")
    assert repr(loaded.scheduler) == repr(scheduler) and loaded.env_name == "hopper-medium-v2"
    after = loaded(observations(), batch_size=4, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(before, after)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pipeline.save_pretrained(tmp_path / "pipe")


def test_diffusers_loads_our_networks_and_scheduler_with_the_same_outputs(tmp_path, pair):
    import diffusers

    unet, value = pair
    ValueGuidedRLPipeline(value, unet).save_pretrained(tmp_path / "pipe")
    theirs_unet = diffusers.UNet1DModel.from_pretrained(tmp_path / "pipe", subfolder="unet").eval()
    theirs_value = diffusers.UNet1DModel.from_pretrained(tmp_path / "pipe", subfolder="value_function").eval()
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path / "pipe", subfolder="scheduler")
    x, t = torch.randn(4, H, OBS + ACT), torch.tensor([4, 3, 1, 0])
    with torch.no_grad():
        torch.testing.assert_close(theirs_unet(x.permute(0, 2, 1), t).sample.permute(0, 2, 1), unet.model(x, t),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs_value(x.permute(0, 2, 1), t).sample, value.model(x, t),
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scheduler.betas.float(), unet.schedule.betas, rtol=1e-5, atol=1e-7)
    assert scheduler.config.prediction_type == "sample" and scheduler.config.num_train_timesteps == N


def test_compatibility_mode_reproduces_diffusers_pipeline_action(tmp_path, pair):
    """Same weights (read back by diffusers from our export), same env data, same global seed: the same action.
    The default mode (per-dimension statistics, σ_t² scaling) gives another."""
    import diffusers
    from diffusers.experimental import ValueGuidedRLPipeline as TheirPipeline

    unet, value = pair
    ValueGuidedRLPipeline(value, unet).save_pretrained(tmp_path / "pipe")
    theirs = TheirPipeline(
        value_function=diffusers.UNet1DModel.from_pretrained(tmp_path / "pipe", subfolder="value_function"),
        unet=diffusers.UNet1DModel.from_pretrained(tmp_path / "pipe", subfolder="unet"),
        scheduler=diffusers.DDPMScheduler.from_pretrained(tmp_path / "pipe", subfolder="scheduler"),
        env=StandInHopper(),
    )
    compatible = ValueGuidedRLPipeline(value, unet, env=StandInHopper(), compatibility="diffusers")
    paper = ValueGuidedRLPipeline(value, unet, env=StandInHopper())
    obs = observations()[0]
    kwargs = dict(batch_size=4, planning_horizon=H, n_guide_steps=2, scale=0.5)
    actions = {}
    for name, pipeline in (("theirs", theirs), ("compatible", compatible), ("paper", paper)):
        torch.manual_seed(0)
        actions[name] = np.asarray(pipeline(obs, **kwargs))
    np.testing.assert_allclose(actions["compatible"], actions["theirs"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(actions["paper"], actions["theirs"], atol=1e-2)


def test_a_hub_folder_reads_with_the_env_dataset_fitting_the_normalizer_per_dimension(tmp_path, pair):
    """diffusers' own folders carry no normalizer or dims: the env gives both, as in diffusers."""
    unet, value = pair
    ValueGuidedRLPipeline(value, unet).save_pretrained(tmp_path / "pipe")
    for ours_only in ("normalizer", "pipeline_config.json"):
        path = tmp_path / "pipe" / ours_only
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(ValueError, match="records no dims"):
        ValueGuidedRLPipeline.from_pretrained(tmp_path / "pipe", horizon=H)
    with pytest.raises(FileNotFoundError, match="no normalizer/"):
        ValueGuidedRLPipeline.from_pretrained(tmp_path / "pipe", env=SpacesOnly(), horizon=H)
    env = StandInHopper()
    loaded = ValueGuidedRLPipeline.from_pretrained(tmp_path / "pipe", env=env, horizon=H)  # the hub's is 32
    data = np.concatenate([env.data["actions"], env.data["observations"]], axis=1).astype(np.float64)
    np.testing.assert_allclose(loaded.unet.normalizer.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.unet.normalizer.std.numpy(), data.std(0), rtol=1e-5)
    assert loaded(observations(), batch_size=2).shape == (3, ACT)


def write_run_pair(root, seed=1):
    """runs/hopper-medium-v2/{cpu, cpu_value}/<time>_s0, as train.py lays out the CPU presets; returns the models."""
    (unet, unet_config), (value, value_config) = models(seed)
    for model, config, exp in ((unet, unet_config, "cpu"), (value, value_config, "cpu_value")):
        record = asdict(config)
        record.update(exp_name=exp, dims={"observation_dim": OBS, "action_dim": ACT, "transition_dim": OBS + ACT})
        write_run(root / "hopper-medium-v2" / exp / "2026-01-01_00-00-00_s0", record, model, step=40)
    return unet, value


def test_from_pretrained_reads_a_run_pair(tmp_path):
    """A diffusion run (or its experiment folder) and the newest value run beside it, as train.py lays them out."""
    unet, value = write_run_pair(tmp_path / "runs")
    root = tmp_path / "runs" / "hopper-medium-v2"
    direct = ValueGuidedRLPipeline(value, unet)
    expected = direct(observations(), batch_size=3, generator=torch.Generator().manual_seed(1))
    for path in (root / "cpu", root / "cpu" / "2026-01-01_00-00-00_s0"):
        loaded = ValueGuidedRLPipeline.from_pretrained(path)
        assert loaded.env_name == "hopper-medium-v2" and loaded.record["value_function"]["step"] == 40
        assert np.array_equal(loaded(observations(), batch_size=3, generator=torch.Generator().manual_seed(1)),
                              expected)
    with pytest.raises(ValueError, match="holds a 'value' model"):
        ValueGuidedRLPipeline.from_pretrained(root / "cpu_value")


def test_bad_input_gets_one_clear_error(tmp_path, pair):
    unet, value = pair
    pipeline = ValueGuidedRLPipeline(value, unet)
    with pytest.raises(ValueError, match=r"obs has shape \(5,\), but the networks take observations of size 11"):
        pipeline(np.zeros(5))
    with pytest.raises(ValueError, match=r"planning_horizon=16 but the value function was built for horizon 8"):
        pipeline(np.zeros(OBS), planning_horizon=16)
    (_, _), (long_value, _) = models(value_horizon=16)
    with pytest.raises(ValueError, match=r"unet \(horizon 8, transition_dim 14\) and the value_function \(horizon "
                                         r"16, transition_dim 14\) disagree"):
        ValueGuidedRLPipeline(long_value, unet)
    with pytest.raises(ValueError, match="env 'walker2d-medium-v2' has observation_dim 17 and action_dim 6 but the "
                                         "networks take observation_dim 11 and action_dim 3"):
        ValueGuidedRLPipeline(value, unet, env="walker2d-medium-v2")
    with pytest.raises(ValueError, match="normalizer statistics 'mean' of the unet and the value_function differ"):
        ValueGuidedRLPipeline(models(seed=3)[1][0], unet)
    with pytest.raises(ValueError, match="compatibility='diffusers' samples as diffusers does"):
        ValueGuidedRLPipeline(value, unet, DDIMScheduler(3), compatibility="diffusers")
    pipeline.save_pretrained(tmp_path / "pipe")
    for component in ("value_function", "scheduler", "unet"):
        shutil.copytree(tmp_path / "pipe", tmp_path / component)
        shutil.rmtree(tmp_path / component / component)
        with pytest.raises(FileNotFoundError, match=f"{component} has no {component}/"):
            ValueGuidedRLPipeline.from_pretrained(tmp_path / component)
    with pytest.raises(FileNotFoundError, match="not found"):
        ValueGuidedRLPipeline.from_pretrained(tmp_path / "absent")
