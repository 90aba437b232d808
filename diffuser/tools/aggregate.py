"""Mean ± standard error over many evaluations: `python -m diffuser.tools.aggregate runs/<env>/<exp>/*/plans/*`.

Reads every results.json that plan.py wrote (give plan folders, the files, or any folder to search), groups the
evaluations by the plan settings that differ between them (e.g. guide.scale; plan seeds and run folders never split a
group) and prints per group the normalized score ×100 over all episodes, and over evaluations: the mean of each
results.json's episode mean (one evaluation = one run × one plan seed; with --per-run, one diffusion run, i.e. one
training seed, whose evaluations are pooled first).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

# Plan settings that never split a group: what tells evaluations of one setting apart, or does not change scores.
NOT_SETTINGS = ("seed", "diffusion_run", "value_run", "checkpoint", "device", "runs_root", "exp_name", "logger.",
                "planner.video", "planner.n_images")


@dataclass
class Evaluation:
    """One results.json: the normalized scores of its episodes and the plan settings that produced them."""

    path: Path
    run: str  # the diffusion run folder evaluated
    scores: np.ndarray  # (n_episodes,) normalized scores ×100
    episode_seeds: list[int]  # env reset seed of each episode
    settings: dict[str, Any]  # the plan config, flattened to dotted keys


@dataclass
class GroupSummary:
    """Normalized score ×100 of one group: over all its episodes and over its units (evaluations or runs)."""

    group: str
    unit: str  # "evaluation" or "run"
    n_evaluations: int
    n_runs: int
    n_episodes: int
    episode_mean: float
    episode_se: float  # std (ddof 0) / √n over episodes: the paper's ±
    unit_mean: float  # mean of the per-unit means
    unit_se: float  # std (ddof 1) / √n over the per-unit means; NaN for a single unit


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """results.json files named, in the named folders, or anywhere below them, each once in sorted order."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file():
            found.add(path)
        elif (path / "results.json").is_file():
            found.add(path / "results.json")
        elif path.is_dir():
            found.update(path.rglob("results.json"))
        else:
            raise FileNotFoundError(f"{path} does not exist; pass plan folders (runs/<env>/<exp>/*/plans/*) or "
                                    "results.json files written by plan.py")
    return sorted(found)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def load_evaluation(path: Path) -> Evaluation:
    """Read one results.json; a file that is not one raises ValueError naming it."""
    try:
        record = json.loads(Path(path).read_text())
        episodes = record["episodes"]
        scores = np.array([float(e["normalized_score"]) for e in episodes])
        seeds = [int(e["seed"]) for e in episodes]
        settings = _flatten(record["config"])
        run = str(record.get("diffusion_run") or settings.get("diffusion_run"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a results.json written by plan.py ({type(e).__name__}: {e})") from None
    if len(scores) == 0:
        raise ValueError(f"{path}: holds no episodes")
    return Evaluation(Path(path), run, scores, seeds, settings)


def varying_settings(evaluations: list[Evaluation]) -> list[str]:
    """Plan settings whose value differs between evaluations (those that define the groups)."""
    keys = sorted({k for e in evaluations for k in e.settings})
    keys = [k for k in keys if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in NOT_SETTINGS)]
    return [k for k in keys if len({json.dumps(e.settings.get(k)) for e in evaluations}) > 1]


def group_evaluations(evaluations: list[Evaluation], by: list[str] | None = None) -> dict[str, list[Evaluation]]:
    """Evaluations keyed by "key=value ..." of the ``by`` settings (default: every setting that varies)."""
    by = varying_settings(evaluations) if by is None else by
    groups: dict[str, list[Evaluation]] = {}
    for evaluation in evaluations:
        label = " ".join(f"{k}={evaluation.settings.get(k)}" for k in by) or "all"
        groups.setdefault(label, []).append(evaluation)
    return groups


def summarize(group: str, evaluations: list[Evaluation], per_run: bool = False) -> GroupSummary:
    """Mean ± s.e. over all episodes, and over per-evaluation (or, with per_run, per-run) means."""
    episodes = np.concatenate([e.scores for e in evaluations])
    units: dict[str, list[np.ndarray]] = {}
    for e in evaluations:
        units.setdefault(e.run if per_run else str(e.path), []).append(e.scores)
    means = np.array([np.concatenate(scores).mean() for scores in units.values()])
    unit_se = float(means.std(ddof=1) / np.sqrt(len(means))) if len(means) > 1 else float("nan")
    return GroupSummary(
        group=group,
        unit="run" if per_run else "evaluation",
        n_evaluations=len(evaluations),
        n_runs=len({e.run for e in evaluations}),
        n_episodes=len(episodes),
        episode_mean=float(episodes.mean()),
        episode_se=float(episodes.std() / np.sqrt(len(episodes))),
        unit_mean=float(means.mean()),
        unit_se=unit_se,
    )


def shared_episodes(evaluations: list[Evaluation]) -> list[str]:
    """Warnings for evaluations of the same run whose episodes used the same env seeds (not independent)."""
    warnings = []
    by_run: dict[str, list[Evaluation]] = {}
    for e in evaluations:
        by_run.setdefault(e.run, []).append(e)
    for run, evals in by_run.items():
        seen: dict[int, Path] = {}
        shared = 0
        for e in evals:
            for seed in e.episode_seeds:
                shared += seed in seen
                seen.setdefault(seed, e.path)
        if shared:
            n = len(evals[0].episode_seeds)
            warnings.append(
                f"warning: {shared} episodes of {run} repeat env seeds of another evaluation of it (episode i uses "
                f"seed + i), so they are not independent; space plan seeds by planner.n_episodes, e.g. "
                f"seed=0,{n},{2 * n}"
            )
    return warnings


def format_table(summaries: list[GroupSummary]) -> str:
    """One line per group: counts, then mean ± s.e. over episodes and over units."""
    width = max(len("group"), *(len(s.group) for s in summaries))
    over_units = f"over {summaries[0].unit}s"
    lines = [f"{'group':<{width}}  evaluations  runs  episodes  {'over episodes':>14}  {over_units:>16}"]
    for s in summaries:
        by_unit = f"{s.unit_mean:.1f}" + ("" if np.isnan(s.unit_se) else f" ± {s.unit_se:.1f}")
        by_episode = f"{s.episode_mean:.1f} ± {s.episode_se:.1f}"
        lines.append(f"{s.group:<{width}}  {s.n_evaluations:>11}  {s.n_runs:>4}  {s.n_episodes:>8}  "
                     f"{by_episode:>14}  {by_unit:>16}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[GroupSummary]:
    """Command line: ``python -m diffuser.tools.aggregate runs/maze2d-umaze-v1/cpu/*/plans/*``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="plan folders, results.json files, or folders to search")
    parser.add_argument("--by", nargs="*", default=None,
                        help="group by these plan settings (dotted keys, e.g. guide.scale); default: all that vary")
    parser.add_argument("--per-run", action="store_true",
                        help="units are diffusion runs (training seeds), not single evaluations")
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this JSON file")
    args = parser.parse_args(argv)
    try:
        files = find_results(args.paths)
        if not files:
            raise FileNotFoundError(f"no results.json under {' '.join(args.paths)}: evaluate runs with plan.py first")
        evaluations = [load_evaluation(path) for path in files]
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"aggregate: error: {e}\n")
    groups = group_evaluations(evaluations, args.by)
    summaries = [summarize(label, evals, args.per_run) for label, evals in groups.items()]
    unit = "run" if args.per_run else "evaluation"
    print(f"{len(evaluations)} evaluations of {len({e.run for e in evaluations})} runs; normalized score ×100, "
          f"± = standard error (episodes: std/√n as in the paper; {unit}s: sample std/√n)")
    print(format_table(summaries))
    for evals in groups.values():
        for warning in shared_episodes(evals):
            print(warning)
    if args.json is not None:
        from diffuser.utils.files import atomic_write_text

        rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(s).items()}
                for s in summaries]
        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return summaries


if __name__ == "__main__":
    main()
