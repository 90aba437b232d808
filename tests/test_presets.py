"""The paper presets carry the paper's and the original code's constants, and the per-dataset settings follow the data.

Every number below is written from the sources, not from our configs: the paper (Janner et al. 2022, Appendix C:
H 32 and N 20 for locomotion, Maze2D horizons 128 / 256 / 384, guide scale 0.1 and 0.0001 for hopper-medium-expert,
return discount 0.997) and the original code's configs (config/locomotion.py on main, config/maze2d.py on the maze2d
branch, and its Trainer defaults: step_start_ema 2000, update_ema_every 10). Each row is compared with the config
Hydra composes from configs/. Our CPU presets are not paper presets and are not in these tables.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diffuser.config import check_locomotion_experiment, register_configs, resolve_guide

REPO = Path(__file__).resolve().parents[1]
register_configs()


def composed(name, *overrides, to_object=True):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(config_name=name, overrides=list(overrides))
    return OmegaConf.to_object(cfg) if to_object else cfg


# Shared by every paper preset: the original's trainer (Adam 2e-4, 2 micro-batches of 32, EMA 0.995 every 10 steps,
# hard copies before step 2000), x0 prediction, cosine schedule, loss_discount 1, dim 32.
TRAINER = dict(learning_rate=2e-4, batch_size=32, gradient_accumulate_every=2, ema_decay=0.995, step_start_ema=2000,
               update_ema_every=10)
LOCOMOTION_DATA = dict(normalizer="gaussian", use_padding=True, max_path_length=1000, preprocess=[],
                       drop_last_transition=False, goal_conditioned=False)
MAZE2D_DATA = dict(normalizer="limits", use_padding=False, max_path_length=40000, preprocess=["maze2d_set_terminals"],
                   drop_last_transition=True, goal_conditioned=True, termination_penalty=0.0)

# experiment → (env.name, horizon, n_diffusion_steps, dim_mults, attention, action_weight, clip_denoised,
#               n_train_steps, extra env values). action_weight and clip_denoised are None for value models (unused).
TRAIN_ROWS = {
    "locomotion": ("hopper-medium-v2", 32, 20, [1, 2, 4, 8], False, 10.0, False, 1_000_000, {}),
    "locomotion_value": ("hopper-medium-v2", 32, 20, [1, 2, 4, 8], False, None, None, 200_000,
                         dict(discount=0.997, termination_penalty=-100.0)),
    "halfcheetah": ("halfcheetah-medium-v2", 4, 20, [1, 4, 8], True, 10.0, False, 1_000_000, {}),
    "halfcheetah_value": ("halfcheetah-medium-v2", 4, 20, [1, 4, 8], False, None, None, 200_000,
                          dict(discount=0.997, termination_penalty=-100.0)),
    "maze2d_umaze": ("maze2d-umaze-v1", 128, 64, [1, 4, 8], False, 1.0, True, 2_000_000, {}),
    "maze2d_medium": ("maze2d-medium-v1", 256, 256, [1, 4, 8], False, 1.0, True, 2_000_000, {}),
    "maze2d_large": ("maze2d-large-v1", 384, 256, [1, 4, 8], False, 1.0, True, 2_000_000, {}),
}


@pytest.mark.parametrize("experiment", sorted(TRAIN_ROWS))
def test_paper_train_presets_hold_the_papers_constants(experiment):
    name, horizon, n_steps, dim_mults, attention, action_weight, clip, n_train_steps, env = TRAIN_ROWS[experiment]
    config = composed("train", f"experiment={experiment}")
    assert config.exp_name == ("paper_value" if experiment.endswith("_value") else "paper")
    assert (config.env.name, config.horizon, config.diffusion.n_diffusion_steps) == (name, horizon, n_steps)
    assert (config.model.dim, config.model.dim_mults, config.model.attention) == (32, dim_mults, attention)
    assert (config.diffusion.beta_schedule, config.diffusion.predict_epsilon) == ("cosine", False)
    assert config.diffusion.loss_discount == 1.0
    if action_weight is not None:
        assert (config.diffusion.action_weight, config.diffusion.clip_denoised) == (action_weight, clip)
    trainer = {key: getattr(config.trainer, key) for key in TRAINER}
    assert trainer == TRAINER and config.trainer.n_train_steps == n_train_steps
    data = {**(MAZE2D_DATA if name.startswith("maze2d") else LOCOMOTION_DATA), **env}
    assert {key: getattr(config.env, key) for key in data} == data


# env.name → (guide scale, t_stopgrad): the original's base plan config and its per-dataset overrides.
GUIDES = {
    "hopper-medium-v2": (0.1, 2),
    "hopper-medium-replay-v2": (0.1, 2),
    "walker2d-medium-v2": (0.1, 2),
    "walker2d-medium-expert-v2": (0.1, 2),
    "hopper-medium-expert-v2": (0.0001, 4),
    "halfcheetah-medium-v2": (0.001, 4),
    "halfcheetah-medium-replay-v2": (0.001, 4),
    "halfcheetah-medium-expert-v2": (0.001, 4),
}


@pytest.mark.parametrize("dataset", sorted(GUIDES))
def test_paper_planner_guides_each_dataset_as_the_original(dataset):
    """python plan.py env=locomotion planner=locomotion env.name=<dataset>: 64 candidates, 2 guide steps scaled by the
    posterior variance, the exact sampler, discount 0.997, and the dataset's scale and t_stopgrad."""
    config = composed("plan", "env=locomotion", "planner=locomotion", f"env.name={dataset}")
    guide = resolve_guide(config.guide, config.env.name)
    assert (guide.kind, guide.scale, guide.t_stopgrad) == ("value", *GUIDES[dataset])
    assert (guide.n_guide_steps, guide.scale_grad_by_std) == (2, True)
    planner = config.planner
    assert (planner.batch_size, planner.max_episode_steps, config.env.discount) == (64, 1000, 0.997)
    assert (planner.n_sample_steps, planner.warm_start_steps, planner.bf16) == (None, 0, False)


def test_guide_values_given_on_the_command_line_or_by_option_are_kept():
    for overrides, expected in [
        (["guide.scale=0.05"], (0.05, 4)),  # a sweep over the scale keeps halfcheetah's t_stopgrad
        (["guide.scale=0.05", "guide.t_stopgrad=0"], (0.05, 0)),
        (["guide=halfcheetah"], (0.001, 4)),
        (["guide=hopper_medium_expert"], (0.0001, 4)),
        (["guide=none"], (0.0, 0)),
    ]:
        config = composed("plan", "env=locomotion", "env.name=halfcheetah-medium-v2", *overrides)
        guide = resolve_guide(config.guide, config.env.name)
        assert (guide.scale, guide.t_stopgrad) == expected, overrides


@pytest.mark.parametrize("dataset,overrides,expected", [
    # hopper / walker2d guide from t_stopgrad 2: the warm start's 4 steps are t = 3, 2 (gradient), 1, 0 (no gradient)
    ("hopper-medium-v2", [], 4),
    ("walker2d-medium-v2", [], 4),
    ("halfcheetah-medium-v2", [], 6),  # t_stopgrad 4: t = 5, 4 take the gradient
    ("hopper-medium-v2", ["guide=none"], 2),  # no value: t_stopgrad 0, the 2-step warm start of the "no value" rows
    ("hopper-medium-v2", ["guide.t_stopgrad=5"], 7),
    ("hopper-medium-v2", ["planner.warm_start_steps=2"], 2),  # a number is kept: selection only
    ("halfcheetah-medium-v2", ["planner.warm_start_steps=0"], 0),  # the exact sampler
])
def test_cpu_planner_warm_start_lets_the_gradient_act_at_two_steps(dataset, overrides, expected):
    """python plan.py env=locomotion planner=locomotion_cpu: 8 candidates and, unless given, a warm start of
    t_stopgrad + 2 steps, as plan.py resolves it."""
    from diffuser.launch import plan_config

    config = plan_config(composed("plan", "env=locomotion", "planner=locomotion_cpu", f"env.name={dataset}",
                                  *overrides, to_object=False))
    assert (config.planner.batch_size, config.planner.warm_start_steps) == (8, expected)


@pytest.mark.parametrize("experiment,dataset,needs", [
    ("locomotion", "halfcheetah-medium-v2", "experiment=halfcheetah"),
    ("locomotion", "halfcheetah-medium-expert-v2", "experiment=halfcheetah"),
    ("locomotion_value", "halfcheetah-medium-replay-v2", "experiment=halfcheetah_value"),
    ("halfcheetah", "hopper-medium-v2", "experiment=locomotion"),
    ("halfcheetah_value", "walker2d-medium-expert-v2", "experiment=locomotion_value"),
    ("locomotion_cpu", "halfcheetah-medium-v2", "experiment=halfcheetah_cpu"),
    ("locomotion_cpu_value", "halfcheetah-medium-v2", "experiment=halfcheetah_cpu_value"),
    ("halfcheetah_cpu", "hopper-medium-v2", "experiment=locomotion_cpu"),
    ("halfcheetah_cpu_value", "walker2d-medium-v2", "experiment=locomotion_cpu_value"),
])
def test_a_preset_on_the_other_architectures_data_is_refused(experiment, dataset, needs):
    with pytest.raises(ValueError, match=f"^{dataset} needs {needs}[:;]"):
        check_locomotion_experiment(experiment, dataset)


@pytest.mark.parametrize("experiment,dataset", [
    ("locomotion", "hopper-medium-expert-v2"),  # the original changes only its guide
    ("locomotion_value", "walker2d-medium-replay-v2"),
    ("halfcheetah", "halfcheetah-medium-expert-v2"),
    ("halfcheetah_value", "halfcheetah-medium-v2"),
    ("locomotion_cpu", "walker2d-medium-v2"),
    ("halfcheetah_cpu_value", "halfcheetah-medium-v2"),
    ("locomotion_bc", "halfcheetah-medium-v2"),  # BC has no horizon
    ("maze2d_umaze", "maze2d-umaze-v1"),
    (None, "halfcheetah-medium-v2"),
])
def test_matching_presets_are_accepted(experiment, dataset):
    check_locomotion_experiment(experiment, dataset)


def test_train_py_refuses_the_hopper_preset_on_halfcheetah_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "train.py", "experiment=locomotion", "env.name=halfcheetah-medium-v2", "logger=disabled",
         f"runs_root={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: halfcheetah-medium-v2 needs experiment=halfcheetah")
