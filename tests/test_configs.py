"""Every option of every config group composes with train.yaml / plan.yaml and matches the typed schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diffuser.config import PlanConfig, TrainConfig, register_configs
from diffuser.launch import check_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
register_configs()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def compose_to_object(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name=name, overrides=overrides)
    return OmegaConf.to_object(cfg)


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("env", "model", "diffusion", "trainer", "logger", "experiment") for o in options(g)],
)
def test_train_options_compose(override):
    config = compose_to_object("train", [override])
    assert isinstance(config, TrainConfig)


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("env", "planner", "guide", "logger") for o in options(g)])
def test_plan_options_compose(override):
    assert isinstance(compose_to_object("plan", [override]), PlanConfig)


@pytest.mark.parametrize("planner", ["maze2d", "multi2d"])
def test_paper_maze2d_planners_keep_the_original_tracking_rule(planner):
    p = compose_to_object("plan", [f"planner={planner}"]).planner
    assert (p.track_speed, p.track_p_gain, p.track_d_gain) == (1.0, 1.0, 1.0)
    assert p.replan_lag == 0 and p.replan_every == 0 and p.horizon_fractions is None  # one plan, made once


def test_default_is_the_cpu_preset_and_paper_presets_match_the_paper():
    default = compose_to_object("train", [])
    assert (default.env.name, default.exp_name, default.horizon) == ("maze2d-umaze-v1", "cpu", 128)
    assert default.env.generate_if_missing and default.env.preprocess == ["maze2d_set_terminals"]
    for maze, horizon, steps in [("umaze", 128, 64), ("medium", 256, 256), ("large", 384, 256)]:
        config = compose_to_object("train", [f"experiment=maze2d_{maze}"])
        assert config.env.name == f"maze2d-{maze}-v1"
        assert (config.horizon, config.diffusion.n_diffusion_steps) == (horizon, steps)
        assert (config.model.dim, config.model.dim_mults) == (32, [1, 4, 8])
        assert config.env.normalizer == "limits" and config.diffusion.clip_denoised
        assert not config.diffusion.predict_epsilon and config.trainer.n_train_steps == 2_000_000


@pytest.mark.parametrize("preset", ["locomotion_cpu", "locomotion", "halfcheetah", "halfcheetah_cpu"])
def test_locomotion_presets_pair_with_their_value_presets(preset):
    diffusion = compose_to_object("train", [f"experiment={preset}"])
    value = compose_to_object("train", [f"experiment={preset}_value"])
    assert (diffusion.model.kind, value.model.kind) == ("diffusion", "value") and not value.model.attention
    # plan.py pairs the newest runs of exp_name and exp_name + "_value": they must share what check_compatible checks.
    assert value.exp_name == diffusion.exp_name + "_value"
    assert (value.horizon, value.diffusion, value.env) == (diffusion.horizon, diffusion.diffusion, diffusion.env)
    assert value.model.dim_mults == diffusion.model.dim_mults


def test_locomotion_cpu_preset_is_small_and_bc_keeps_its_width():
    diffusion = compose_to_object("train", ["experiment=locomotion_cpu"])
    assert diffusion.trainer.n_train_steps < 1_000_000 and diffusion.model.dim_mults == [1, 2, 4, 8]
    bc = compose_to_object("train", ["experiment=locomotion_bc"])
    assert (bc.model.kind, bc.model.dim) == ("bc", 256)  # not the width the diffusion overlays set
    paper = compose_to_object("train", ["experiment=locomotion"])
    assert (paper.model.dim, paper.horizon, paper.trainer.n_train_steps) == (32, 32, 1_000_000)
    cheetah = compose_to_object("train", ["experiment=halfcheetah_cpu"])
    assert (cheetah.env.name, cheetah.horizon, cheetah.model.dim_mults, cheetah.model.attention) == (
        "halfcheetah-medium-v2", 4, [1, 4, 8], True)
    assert cheetah.trainer == diffusion.trainer  # one CPU schedule for every locomotion dataset
    # The paper presets' constants and each dataset's guide: tests/test_presets.py.


@pytest.mark.parametrize("experiment", options("experiment"))
def test_command_line_groups_beat_the_experiment_overlay(experiment):
    config = compose_to_object("train", [f"experiment={experiment}", "trainer=debug"])
    assert config.trainer.n_train_steps == 4


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(SystemExit, match="unknown config option 'trainer.n_steps'.*n_train_steps"):
        check_overrides(["trainer.n_steps=5"], TrainConfig)
    with pytest.raises(SystemExit, match="Valid options of the top level:.*horizon"):
        check_overrides(["horizn=5"], TrainConfig)
    with pytest.raises(SystemExit, match="planner.episodes"):
        check_overrides(["planner.episodes=3"], PlanConfig)
    check_overrides(["trainer.n_train_steps=5", "env=maze2d_large", "experiment=maze2d_umaze", "+x=1"], TrainConfig)
