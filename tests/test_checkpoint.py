import numpy as np
import pytest
import torch

from conftest import locomotion_arrays
from diffuser.config import DiffusionConfig, ModelConfig
from diffuser.data.sequence import SequenceDataset
from diffuser.runs.build import build_model
from diffuser.runs.checkpoint import latest_checkpoint, load_trainer_state, load_weights, save_checkpoint, write_config
from diffuser.runs.load import check_env_dims, load_run


def tiny_run(tmp_path, kind="diffusion", horizon=8):
    ds = SequenceDataset(locomotion_arrays(), horizon=horizon, normalizer="gaussian", use_padding=True)
    model_cfg, diffusion_cfg = ModelConfig(kind=kind, dim=8, dim_mults=[1, 4]), DiffusionConfig(n_diffusion_steps=4)
    torch.manual_seed(0)
    model = build_model(kind, ds.normalizer, horizon=horizon, observation_dim=3, action_dim=2, model=model_cfg,
                        diffusion=diffusion_cfg)
    config = {
        "model": model_cfg.__dict__, "diffusion": diffusion_cfg.__dict__, "horizon": horizon,
        "env": {"normalizer": "gaussian"}, "dims": {"observation_dim": 3, "action_dim": 2, "transition_dim": 5},
    }
    write_config(tmp_path, config)
    save_checkpoint(tmp_path, 7, model, {"step": 7, "note": torch.zeros(1)}, keep=2)
    return model, ds


@pytest.mark.parametrize("kind", ["diffusion", "value"])
def test_save_then_load_gives_identical_outputs(tmp_path, kind):
    model, ds = tiny_run(tmp_path, kind)
    run = load_run(tmp_path)
    assert run.step == 7 and run.config["horizon"] == 8
    x, t = ds.get_batch(np.arange(3)).trajectories, torch.tensor([0, 1, 3])
    torch.testing.assert_close(run.model.model(x, t), model.model(x, t), rtol=0, atol=0)
    torch.testing.assert_close(run.model.normalizer.normalize(x), model.normalizer.normalize(x), rtol=0, atol=0)


def test_checkpoints_rotate_and_latest_points_to_newest(tmp_path):
    model, _ = tiny_run(tmp_path)
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, model, {"step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_0000020", "step_0000030"]
    assert latest_checkpoint(tmp_path).name == "step_0000030"
    assert load_trainer_state(latest_checkpoint(tmp_path))["step"] == 30
    assert not list((tmp_path / "checkpoints").glob(".*")), "no temp folders left behind"


def test_mismatched_weights_name_both_shapes(tmp_path):
    tiny_run(tmp_path)
    other = build_model("diffusion", torch.nn.Identity(), horizon=8, observation_dim=4, action_dim=2,
                        model=ModelConfig(dim=8, dim_mults=[1, 4]), diffusion=DiffusionConfig(n_diffusion_steps=4))
    with pytest.raises(ValueError, match=r"shape \(5, 8, 5\).*expects \(6, 8, 5\)|shape .*expects"):
        load_weights(other, latest_checkpoint(tmp_path) / "model.safetensors")


def test_truncated_weights_and_missing_runs_are_clear_errors(tmp_path):
    model, _ = tiny_run(tmp_path)
    weights = latest_checkpoint(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_weights(model, weights)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        load_run(tmp_path / "nowhere")


def test_env_dims_mismatch_names_both():
    import diffuser.envs  # noqa: F401
    import gymnasium

    env = gymnasium.make("maze2d-umaze-v1")
    check_env_dims(env, {"observation_dim": 4, "action_dim": 2}, "run")
    with pytest.raises(ValueError, match="observation_dim=11 but env 'maze2d-umaze-v1' has observation_dim=4"):
        check_env_dims(env, {"observation_dim": 11, "action_dim": 3}, "run")
