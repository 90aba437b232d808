"""python -m diffuser.tools.aggregate: mean ± s.e. over episodes and over evaluations, grouped by plan settings."""

import json
import math

import numpy as np
import pytest

from diffuser.tools.aggregate import main


def write_results(root, run, seed, scores, scale=0.1, name=None):
    """A results.json as plan.py writes it: <root>/<run>/plans/<name>/results.json; episode i has env seed seed + i."""
    folder = root / run / "plans" / (name or f"t_s{seed}_scale{scale}")
    folder.mkdir(parents=True)
    record = {
        "summary": {"normalized_score_mean": float(np.mean(scores))},
        "episodes": [{"seed": seed + i, "normalized_score": s, "return": 0.0, "length": 5} for i, s in
                     enumerate(scores)],
        "diffusion_run": str(root / run),
        "config": {"seed": seed, "diffusion_run": None, "device": "cpu", "logger": {"backend": "disabled"},
                   "guide": {"scale": scale, "t_stopgrad": 2}, "planner": {"n_episodes": len(scores)}},
    }
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def test_means_and_standard_errors_by_hand(tmp_path, capsys):
    a = write_results(tmp_path, "run_a", 0, [10.0, 20.0])
    b = write_results(tmp_path, "run_b", 0, [30.0, 50.0])
    (summary,) = main([str(a), str(b)])
    assert (summary.group, summary.n_evaluations, summary.n_runs, summary.n_episodes) == ("all", 2, 2, 4)
    assert summary.episode_mean == pytest.approx(27.5)
    assert summary.episode_se == pytest.approx(np.std([10, 20, 30, 50]) / 2)  # ddof 0, as the paper
    assert summary.unit_mean == pytest.approx(27.5)  # per-evaluation means 15 and 40
    assert summary.unit_se == pytest.approx(np.std([15, 40], ddof=1) / math.sqrt(2))  # 12.5
    table = capsys.readouterr().out
    assert "27.5 ± 12.5" in table and f"27.5 ± {np.std([10, 20, 30, 50]) / 2:.1f}" in table


def test_groups_by_the_settings_that_vary_and_not_by_seed_or_run(tmp_path, capsys):
    for run in ("run_a", "run_b"):
        for seed in (0, 100):
            for scale in (0.01, 0.1):
                write_results(tmp_path, run, seed, [scale * 100 + seed / 100, scale * 100], scale=scale)
    summaries = main([str(tmp_path)])  # a folder is searched for results.json
    assert [s.group for s in summaries] == ["guide.scale=0.01", "guide.scale=0.1"]
    assert all((s.n_evaluations, s.n_runs, s.n_episodes) == (4, 2, 8) for s in summaries)
    assert summaries[0].episode_mean == pytest.approx(1.25)  # each run: seed 0 scores 1, 1; seed 100 scores 2, 1
    out = capsys.readouterr().out
    assert "warning" not in out  # seeds 0 and 100 with 2 episodes: no shared env seeds
    (by_run,) = main([str(tmp_path), "--by", "--per-run"])  # one group; runs pool their 4 evaluations
    assert (by_run.group, by_run.unit, by_run.n_evaluations) == ("all", "run", 8)
    assert by_run.unit_se == pytest.approx(0.0)  # both runs have the same scores


def test_evaluations_sharing_env_seeds_are_flagged(tmp_path, capsys):
    write_results(tmp_path, "run_a", 0, [1.0, 2.0, 3.0], name="first")
    write_results(tmp_path, "run_a", 1, [1.0, 2.0, 3.0], name="second")  # env seeds 1, 2 repeat
    write_results(tmp_path, "run_b", 1, [1.0, 2.0, 3.0])  # another run: independent
    main([str(tmp_path)])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "2 episodes of" in warnings[0] and "run_a" in warnings[0]
    assert "seed=0,3,6" in warnings[0]


def test_json_output_and_bad_input(tmp_path, capsys):
    a = write_results(tmp_path, "run_a", 0, [10.0, 20.0])
    main([str(a), "--json", str(tmp_path / "table.json")])
    (row,) = json.loads((tmp_path / "table.json").read_text())
    assert row["episode_mean"] == 15.0 and row["unit_se"] is None  # one evaluation: no spread to report

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"aggregate: error: {tmp_path / 'missing'}")
    (a / "results.json").write_text("{not json")
    with pytest.raises(SystemExit):
        main([str(a)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{a / 'results.json'}: not a results.json written by plan.py" in err[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty")])
    assert "no results.json under" in capsys.readouterr().err
