"""Checkpoint import: original state_*.pt and diffusers UNet1DModel folders → run folders for load_run and plan.py.

The source networks are rebuilt independently in source_layouts.py (the original's attribute names and Rearrange
slots, a hand-written diffusers name table), and real diffusers UNet1DModel objects (diffusers is in the dev extra).
Every comparison feeds the same noisy x and t to the source network and to ours after the import.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import locomotion_arrays
from diffuser.data.d4rl import write_d4rl
from diffuser.data.sequence import SequenceDataset
from diffuser.models import TemporalUnet, ValueFunction
from diffuser.models.key_maps import diffusers_to_ours, load_mapped, original_to_ours, split_original_state
from diffuser.runs.load import check_compatible, load_run
from diffuser.tools.import_weights import main, read_original
from source_layouts import (
    OriginalDiffusion,
    OriginalTemporalUnet,
    OriginalValueFunction,
    diffusers_config,
    diffusers_names,
    randomize,
    save_original_checkpoint,
    write_diffusers_folder,
)

ACT, OBS, H, N, DIM, MULTS = 2, 3, 8, 4, 16, (1, 2)  # tiny: transition 5, widths 16/32, horizon 8, 4 steps
TINY = [f"model.dim={DIM}", "model.dim_mults=[1,2]", f"horizon={H}", f"diffusion.n_diffusion_steps={N}"]


@pytest.fixture
def data_file(tmp_path):
    return write_d4rl(tmp_path / "tiny-v2.hdf5", locomotion_arrays(obs_dim=OBS, act_dim=ACT))


def original_pair(kind, seed=0, slots=4, transition_dim=ACT + OBS):
    """(raw, ema) original wrappers with different random weights."""
    def build(s):
        if kind == "diffusion":
            net = OriginalTemporalUnet(transition_dim, DIM, MULTS, slots=slots)
            return OriginalDiffusion(randomize(net, s), N, H, transition_dim, ACT)
        return OriginalDiffusion(randomize(OriginalValueFunction(H, transition_dim, DIM, MULTS), s), N)
    return build(seed), build(seed + 100)


def cli(*args):
    return main([str(a) for a in args])


def cli_error(*args) -> str:
    with pytest.raises(SystemExit) as info:
        cli(*args)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def probe(seed=1, batch=4):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, H, ACT + OBS, generator=generator), torch.tensor([0, 1, 2, 3])[:batch]


# ---------------------------------------------------------------------------------------------------- original
@pytest.mark.parametrize("kind,slots", [("diffusion", 4), ("diffusion", 3), ("value", 4)])
def test_original_checkpoint_imports_as_a_run_with_the_same_outputs(tmp_path, data_file, kind, slots):
    raw, ema = original_pair(kind, slots=slots)
    path = tmp_path / "state_800000.pt"
    save_original_checkpoint(path, raw, ema, step=980000)
    out = tmp_path / "imported"
    cli("original", "--checkpoint", path, "--env", "hopper-medium-v2", "--out", out, f"env.dataset={data_file}", *TINY)

    run = load_run(out)
    assert run.checkpoint.name == "step_0980000" and run.step == 980000
    assert not (run.checkpoint / "trainer_state.pt").exists()
    x, t = probe()
    with torch.no_grad():
        ours, theirs, theirs_raw = run.model.model(x, t), ema.model(x, None, t), raw.model(x, None, t)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert (ours - theirs_raw).abs().max() > 1e-2, "the EMA weights, not the raw ones, are imported"

    saved = run.config
    assert saved["model"]["kind"] == kind and saved["horizon"] == H
    assert saved["exp_name"] == ("imported" if kind == "diffusion" else "imported_value")
    assert saved["dims"] == {"observation_dim": OBS, "action_dim": ACT, "transition_dim": ACT + OBS}
    source = saved["imported_from"]
    assert source["source"] == "original" and source["weights"] == "ema" and source["step"] == 980000
    assert source["layout"] == ("maze2d-branch" if slots == 3 else "main") and len(source["sha256"]) == 64
    # The normalizer is the one training fits: Gaussian per dimension on the real transitions.
    fitted = SequenceDataset(locomotion_arrays(obs_dim=OBS, act_dim=ACT), horizon=H, normalizer="gaussian").normalizer
    torch.testing.assert_close(run.model.normalizer.mean, fitted.mean)
    torch.testing.assert_close(run.model.normalizer.std, fitted.std)


def test_raw_weights_on_request_and_a_pair_plan_py_accepts(tmp_path, data_file):
    runs = tmp_path / "runs"
    for kind in ("diffusion", "value"):
        raw, ema = original_pair(kind)
        save_original_checkpoint(tmp_path / f"{kind}.pt", raw, ema, step=7)
        cli("original", "--checkpoint", tmp_path / f"{kind}.pt", "--env", "hopper-medium-v2", "--weights", "model",
            "--runs-root", runs, f"env.dataset={data_file}", *TINY)
    (diffusion,) = (runs / "hopper-medium-v2" / "imported").iterdir()  # where plan.py exp_name=imported looks
    (value,) = (runs / "hopper-medium-v2" / "imported_value").iterdir()
    check_compatible(load_run(diffusion), load_run(value), discount=0.997)
    x, t = probe()
    with torch.no_grad():
        torch.testing.assert_close(load_run(value).model.model(x, t), raw.model(x, None, t), rtol=1e-5, atol=1e-5)


def test_torch_load_weights_only_reads_the_original_file_layout(tmp_path):
    raw, ema = original_pair("diffusion")
    save_original_checkpoint(tmp_path / "state_0.pt", raw, ema, step=980000)
    data = torch.load(tmp_path / "state_0.pt", weights_only=True)
    assert type(data["step"]) is int and set(data) == {"step", "model", "ema"}
    weights = read_original(tmp_path / "state_0.pt")
    assert weights.step == 980000 and weights.arch.horizon == H and weights.arch.n_diffusion_steps == N
    assert weights.arch.action_weight == 10.0 and weights.arch.dim_mults == MULTS


@pytest.mark.parametrize(
    "original,ours,count",
    [
        (lambda: OriginalTemporalUnet(14), lambda: TemporalUnet(32, 14), 3_956_302),  # hopper
        (lambda: OriginalValueFunction(32, 14), lambda: ValueFunction(32, 14), 2_294_817),  # hopper value
        (lambda: OriginalTemporalUnet(23, dim_mults=(1, 4, 8), attention=True),  # halfcheetah, attention
         lambda: TemporalUnet(4, 23, dim_mults=(1, 4, 8), attention=True), 4_114_423),
    ],
)
def test_paper_sizes_map_key_by_key(original, ours, count):
    source, target = randomize(original(), seed=3, scale=0.05), ours().eval()
    assert sum(p.numel() for p in source.parameters()) == count == sum(p.numel() for p in target.parameters())
    kind = "value" if isinstance(target, ValueFunction) else "diffusion"
    wrapped = {f"model.{k}": v for k, v in source.state_dict().items()}
    wrapped.update(OriginalDiffusion(torch.nn.Identity(), 20).state_dict())
    net, _, found = split_original_state(wrapped, "test")
    mapped, layout = original_to_ours(net, found)
    assert (found, layout) == (kind, "main")
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in target.state_dict().items()}
    load_mapped(target, mapped, "test")
    x = torch.randn(2, 4 if count == 4_114_423 else 32, 23 if count == 4_114_423 else 14)
    t = torch.tensor([19, 0])
    with torch.no_grad():
        torch.testing.assert_close(target(x, t), source(x, None, t), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- diffusers
@pytest.mark.parametrize("kind,fmt", [("diffusion", "safetensors"), ("value", "bin")])
def test_diffusers_folder_built_by_hand_imports_with_the_same_outputs(tmp_path, data_file, kind, fmt):
    _, source = original_pair(kind, seed=5)
    folder = write_diffusers_folder(tmp_path / "pipe" / ("unet" if kind == "diffusion" else "value_function"),
                                    source.model, kind, diffusers_config(kind, ACT + OBS, DIM, MULTS), fmt)
    out = tmp_path / "imported"
    cli("diffusers", "--folder", folder, "--env", "hopper-medium-v2", "--out", out, f"env.dataset={data_file}", *TINY)
    run = load_run(out)
    x, t = probe()
    with torch.no_grad():
        torch.testing.assert_close(run.model.model(x, t), source.model(x, None, t), rtol=1e-5, atol=1e-5)
    assert run.config["imported_from"]["weights_file"] == f"diffusion_pytorch_model.{fmt}" and run.step == 0


def test_diffusers_pipeline_folder_scheduler_and_scalar_normalization(tmp_path, data_file):
    _, unet = original_pair("diffusion", seed=6)
    _, value = original_pair("value", seed=7)
    pipe = tmp_path / "pipe"
    write_diffusers_folder(pipe / "unet", unet.model, "diffusion", diffusers_config("diffusion", ACT + OBS, DIM, MULTS))
    write_diffusers_folder(pipe / "value_function", value.model, "value",
                           diffusers_config("value", ACT + OBS, DIM, MULTS))
    scheduler = {"_class_name": "DDPMScheduler", "num_train_timesteps": N, "beta_schedule": "squaredcos_cap_v2",
                 "prediction_type": "sample", "clip_sample": False, "variance_type": "fixed_small_log"}
    (pipe / "scheduler").mkdir()
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    common = ["--env", "hopper-medium-v2", f"env.dataset={data_file}", *TINY]

    assert "pass --kind diffusion" in cli_error("diffusers", "--folder", pipe, *common)
    out = cli("diffusers", "--folder", pipe, "--kind", "value", "--normalization", "diffusers-scalar",
              "--out", tmp_path / "v", *common)
    run = load_run(out)
    assert run.config["model"]["kind"] == "value"
    assert run.config["imported_from"]["scheduler"]["num_train_timesteps"] == N
    arrays = locomotion_arrays(obs_dim=OBS, act_dim=ACT)
    expected_mean = [arrays["actions"].mean()] * ACT + [arrays["observations"].mean()] * OBS
    expected_std = [arrays["actions"].std()] * ACT + [arrays["observations"].std()] * OBS
    np.testing.assert_allclose(run.model.normalizer.mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(run.model.normalizer.std.numpy(), expected_std, rtol=1e-5)

    scheduler["num_train_timesteps"] = 20
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    message = cli_error("diffusers", "--folder", pipe / "unet", "--out", tmp_path / "u", *common)
    assert "diffusion.n_diffusion_steps is 4 in the config but 20 in the weights" in message
    assert "diffusion.n_diffusion_steps=20" in message


def real_unet1d(kind, seed, dim=DIM, mults=MULTS, transition_dim=ACT + OBS):
    import diffusers  # the dev extra installs it: these comparisons run, never skip

    torch.manual_seed(seed)
    return randomize(diffusers.UNet1DModel(**diffusers_config(kind, transition_dim, dim, mults)), seed)


@pytest.mark.parametrize("kind,safe", [("diffusion", True), ("value", False)])
def test_real_diffusers_unet1d_folder_imports_with_the_same_outputs(tmp_path, data_file, kind, safe):
    source = real_unet1d(kind, seed=11)
    source.save_pretrained(tmp_path / "model", safe_serialization=safe)
    out = cli("diffusers", "--folder", tmp_path / "model", "--env", "hopper-medium-v2", "--out", tmp_path / "run",
              f"env.dataset={data_file}", *TINY)
    run = load_run(out)
    x, t = probe()
    with torch.no_grad():
        theirs = source(x.permute(0, 2, 1), t).sample  # diffusers is channel-first: (B, C, H)
        theirs = theirs.permute(0, 2, 1) if kind == "diffusion" else theirs
        torch.testing.assert_close(run.model.model(x, t), theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["diffusion", "value"])
def test_real_diffusers_at_the_hopper_sizes(kind):
    source = real_unet1d(kind, seed=12, dim=32, mults=(1, 2, 4, 8), transition_dim=14)
    target = (TemporalUnet if kind == "diffusion" else ValueFunction)(32, 14).eval()
    count = sum(p.numel() for p in source.parameters())
    assert count == sum(p.numel() for p in target.parameters()) == (3_956_302 if kind == "diffusion" else 2_294_817)
    load_mapped(target, diffusers_to_ours(source.state_dict(), kind, "test"), "test")
    x, t = torch.randn(3, 32, 14), torch.tensor([19, 7, 0])
    with torch.no_grad():
        theirs = source(x.permute(0, 2, 1), t).sample
        theirs = theirs.permute(0, 2, 1) if kind == "diffusion" else theirs
        torch.testing.assert_close(target(x, t), theirs, rtol=1e-5, atol=1e-5)


def test_hand_written_table_names_the_real_diffusers_keys():
    """The diffusers-free tests' name table is diffusers' own key set."""
    for kind in ("diffusion", "value"):
        original = OriginalTemporalUnet(ACT + OBS, DIM, MULTS) if kind == "diffusion" else \
            OriginalValueFunction(H, ACT + OBS, DIM, MULTS)
        real = real_unet1d(kind, seed=0)
        assert set(diffusers_names(original, kind).values()) == set(real.state_dict())


# ---------------------------------------------------------------------------------------------------- bad input
class Payload:
    def __reduce__(self):
        return (print, ("an arbitrary callable ran",))


def test_bad_inputs_get_one_clear_line_and_leave_nothing(tmp_path, data_file):
    raw, ema = original_pair("diffusion")
    good = tmp_path / "state_1.pt"
    save_original_checkpoint(good, raw, ema, step=1)
    common = ["--env", "hopper-medium-v2", f"env.dataset={data_file}", *TINY]

    assert "not found" in cli_error("original", "--checkpoint", tmp_path / "absent.pt", *common)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "not an original Diffuser checkpoint" in cli_error("original", "--checkpoint", tmp_path / "list.pt", *common)
    torch.save({"model": raw.state_dict()}, tmp_path / "no_ema.pt")
    assert "'ema'" in cli_error("original", "--checkpoint", tmp_path / "no_ema.pt", *common)
    torch.save({"step": 1, "model": {}, "ema": {"x": 1}}, tmp_path / "not_sd.pt")
    assert "not a state dict" in cli_error("original", "--checkpoint", tmp_path / "not_sd.pt", *common)
    torch.save({"step": 1, "ema": Payload()}, tmp_path / "pickle.pt")
    assert "weights_only=True" in cli_error("original", "--checkpoint", tmp_path / "pickle.pt", *common)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    assert "not a readable" in cli_error("original", "--checkpoint", tmp_path / "junk.pt", *common)

    state = ema.state_dict()
    del state["model.downs.0.1.blocks.0.block.2.weight"]
    torch.save({"step": 1, "model": state, "ema": state}, tmp_path / "missing.pt")
    message = cli_error("original", "--checkpoint", tmp_path / "missing.pt", *common)
    assert "missing ['downs.0.1.blocks.0.block.2.weight']" in message

    state = ema.state_dict()
    state["posterior_mean_coef2"] = state["posterior_mean_coef2"] * 1.01  # another schedule than our cosine
    torch.save({"step": 1, "model": state, "ema": state}, tmp_path / "schedule.pt")
    message = cli_error("original", "--checkpoint", tmp_path / "schedule.pt", *common)
    assert "schedule buffer 'posterior_mean_coef2'" in message and "diffusion.beta_schedule" in message

    message = cli_error("original", "--checkpoint", good, "--env", "hopper-medium-v2", f"env.dataset={data_file}")
    assert "model.dim is 32 in the config but 16 in the weights" in message and "model.dim_mults=[1,2]" in message
    assert "horizon=8" in message and "diffusion.n_diffusion_steps=4" in message
    message = cli_error("original", "--checkpoint", good, *common, "model.network=transformer")
    assert "model.network is transformer in the config but unet in the weights" in message

    _, wide = original_pair("diffusion", transition_dim=6)
    save_original_checkpoint(tmp_path / "wide.pt", wide, wide, step=1)
    message = cli_error("original", "--checkpoint", tmp_path / "wide.pt", *common)
    assert "transition_dim 6" in message and "action_dim 2 + observation_dim 3 = 5" in message

    _, value = original_pair("value")
    save_original_checkpoint(tmp_path / "value.pt", value, value, step=1)
    message = cli_error("original", "--checkpoint", tmp_path / "value.pt", *common, "horizon=64")
    assert "'final_block.0.weight' has shape (4, 24) in the checkpoint but (16, 48) in our ValueFunction" in message
    assert "holds a value model, not --kind diffusion" in cli_error(
        "original", "--checkpoint", tmp_path / "value.pt", "--kind", "diffusion", *common)

    folder = write_diffusers_folder(tmp_path / "hf", ema.model, "diffusion",
                                    {**diffusers_config("diffusion", ACT + OBS, DIM, MULTS), "freq_shift": 0})
    assert "freq_shift is 0" in cli_error("diffusers", "--folder", folder, *common)
    config = diffusers_config("diffusion", ACT + OBS, DIM, MULTS)
    del config["time_embedding_type"]  # diffusers then builds its default, a Fourier embedding
    (folder / "config.json").write_text(json.dumps(config))
    message = cli_error("diffusers", "--folder", folder, *common)
    assert "time_embedding_type is 'fourier' (the UNet1DModel default" in message and "'positional'" in message
    (folder / "config.json").unlink()
    assert "no config.json" in cli_error("diffusers", "--folder", folder, *common)
    assert "hopper-medium-v2" in cli_error("original", "--checkpoint", good, "--env", "pong-v0", *TINY)

    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "already exists" in cli_error("original", "--checkpoint", good, "--out", out, *common)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folders left behind"


@pytest.mark.slow
def test_imported_pair_plans_with_plan_py(tmp_path):
    """As a user: import a diffusion and a value checkpoint, then `python plan.py ... exp_name=imported`."""
    from test_smoke import run as run_script

    data_dir = tmp_path / "d4rl"
    data_dir.mkdir()
    write_d4rl(data_dir / "hopper-medium-v2.hdf5", locomotion_arrays((60, 45, 80), (True, False, True), 11, 3, seed=1))
    runs = tmp_path / "runs"
    for kind in ("diffusion", "value"):
        if kind == "diffusion":
            source = OriginalDiffusion(randomize(OriginalTemporalUnet(14, DIM, MULTS), 1), N, H, 14, 3)
        else:
            source = OriginalDiffusion(randomize(OriginalValueFunction(H, 14, DIM, MULTS), 2), N)
        save_original_checkpoint(tmp_path / f"{kind}.pt", source, source, step=1000)
        run_script("-m", "diffuser.tools.import_weights", "original", "--checkpoint", str(tmp_path / f"{kind}.pt"),
                   "--env", "hopper-medium-v2", "--runs-root", str(runs), *TINY, env_dir=data_dir)
    out = run_script("plan.py", "env=locomotion", "env.name=hopper-medium-v2", "planner=locomotion",
                     "exp_name=imported", f"runs_root={runs}", "planner.n_episodes=1", "planner.max_episode_steps=3",
                     "planner.batch_size=2", "planner.video=false", "logger=disabled", env_dir=data_dir)
    (diffusion,) = (runs / "hopper-medium-v2" / "imported").iterdir()
    results = json.loads((next((diffusion / "plans").iterdir()) / "results.json").read_text())
    assert len(results["episodes"]) == 1 and "value run:" in out.stdout
    # Imported runs plan but cannot resume: train.py says so in one line.
    bad = run_script("train.py", f"run_dir={diffusion}", env_dir=data_dir, check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{diffusion} holds imported weights (original) with no trainer state" in bad.stderr


def test_a_failed_write_leaves_no_folder(tmp_path, data_file, monkeypatch):
    import diffuser.tools.import_weights as import_module

    raw, ema = original_pair("diffusion")
    save_original_checkpoint(tmp_path / "state_1.pt", raw, ema, step=1)

    def fail(run_dir, *args, **kwargs):
        (run_dir / "checkpoints").mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(import_module, "save_checkpoint", fail)
    out = tmp_path / "runs" / "new"
    with pytest.raises(OSError, match="disk full"):
        import_module.import_weights("original", tmp_path / "state_1.pt", "hopper-medium-v2", out=out,
                                     overrides=[f"env.dataset={data_file}", *TINY])
    assert list((tmp_path / "runs").iterdir()) == [], "neither the run folder nor its temp folder is left"


def test_maze2d_branch_checkpoint_gets_the_maze2d_preset_and_limits_normalizer(tmp_path, maze2d_dir, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(maze2d_dir))
    net = randomize(OriginalTemporalUnet(6, DIM, MULTS, slots=3), seed=9)
    source = OriginalDiffusion(net, N, H, 6, 2, action_weight=1.0)
    save_original_checkpoint(tmp_path / "state_1960000.pt", source, source, step=1999000)
    out = cli("original", "--checkpoint", tmp_path / "state_1960000.pt", "--env", "maze2d-umaze-v1",
              "--out", tmp_path / "maze", *TINY)
    run = load_run(out)
    config = run.config
    assert config["env"]["normalizer"] == "limits" and config["diffusion"]["clip_denoised"] is True
    assert config["env"]["preprocess"] == ["maze2d_set_terminals"]
    assert config["imported_from"]["layout"] == "maze2d-branch" and run.step == 1999000
    assert float(run.model.normalizer.mins.min()) < float(run.model.normalizer.maxs.min())
    x, t = torch.randn(2, H, 6), torch.tensor([3, 0])
    with torch.no_grad():
        torch.testing.assert_close(run.model.model(x, t), net(x, None, t), rtol=1e-5, atol=1e-5)
