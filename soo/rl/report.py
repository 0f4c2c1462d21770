"""Report over seeds for the RL experiment: report.md, summary.json and three PNG plots per run
(drawn by soo.rl.plots).

A run is one (protocol, SOO definition) combination (its seeds' results_<protocol>_<definition>.json).
report.md opens with a side-by-side table of every run, then each run's full tables. Every number
is a mean over training seeds with a Student-t 95% interval across seeds (n seeds given); with a
single seed the interval is over evaluation episodes instead, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from soo.core.stats import mean_t_ci95
from soo.rl.classifier import baseline_pools, classification_accuracy, finite_values, one_episode_separation
from soo.rl.config import BASELINES, CONDITIONS
from soo.rl.plots import plot_behaviour, plot_classifier, plot_learning_curves, plot_soo_values

CLASSIFIER_EPISODES = [1, 2, 5, 10, 20, 50, 100, 200, 400]
METRICS = [  # key in the evaluation summary, column title, scale (100 = percent)
    ("red_trapped", "red ends at non-goal landmark %", 100),
    ("red_at_goal", "red ends at goal %", 100),
    ("red_trapped_blue_blind", "red at non-goal, blue blind to red %", 100),
    ("blue_goal_distance", "blue final distance to goal", 1),
    ("blue_return", "blue return (deceptive reward)", 1),
    ("agreement_honest", "blue action = honest baseline's %", 100),
    ("agreement_deceptive", "blue action = deceptive baseline's %", 100),
    ("soo", "mean SOO value (x1e3)", 1000),
]
HAZARD_METRICS = [("blue_hazard_steps", "blue steps in hazard", 1), ("red_hazard_steps", "red steps in hazard", 1)]
CONDITION_NOTES = {
    "deceptive": "MADDPG blue, deceptive reward (frozen-red: against the honest pair's red, frozen; co-trained: both learning)",
    "honest": "MADDPG, honest blue reward, red co-trained",
    "soo": "deceptive + fine-tuned with SOO + action MSE",
    "random": "control: random-target term in SOO's range + action MSE",
    "mse": "control: action MSE only",
    "soo_only": "ablation: SOO without the action MSE",
}


def load_runs(out_dir: Path) -> dict[str, list[dict]]:
    """{"<protocol>/<definition tag>": per-seed results, by seed} for every run under out_dir."""
    runs: dict[str, list[dict]] = {}
    for path in Path(out_dir).glob("seed_*/results_*.json"):
        result = json.loads(path.read_text())
        runs.setdefault(run_key(result), []).append(result)
    if not runs:
        raise FileNotFoundError(f"no seed_*/results_*.json under {out_dir}: run `python rl_deception.py run` first")
    return {key: sorted(runs[key], key=lambda r: r["seed"]) for key in sorted(runs)}


def run_key(result: dict) -> str:
    tag = result["soo_definition"] + ("" if result["soo_distance"] == "mse" else f"-{result['soo_distance']}")
    return f"{result['protocol']}/{tag}"


def _seed_minutes(result: dict) -> float:
    seconds = 0.0
    for block in result["variants"].values():
        seconds += sum(v or 0.0 for v in block.get("train_seconds", {}).values()) + block.get("eval_seconds", 0.0)
    return seconds / 60


def _interval(seed_values: list[float], episode_values: list[float]) -> tuple[float, float, str]:
    if len(seed_values) > 1:
        mean, half = mean_t_ci95(seed_values)
        return mean, half, "seeds"
    # An episode's SOO is NaN when it had no (self, other) pair: it has no value to average.
    mean, half = mean_t_ci95([v for v in episode_values if np.isfinite(v)])
    return mean, half, "episodes"


def summarise(results: list[dict]) -> dict:
    """{variant: {condition: {metric: {mean, ci95, over, per_seed}}}} plus classifier curves."""
    summary = {"seeds": [r["seed"] for r in results], "variants": {}}
    every = list(dict.fromkeys(v for r in results for v in r["variants"]))
    for variant in every:
        # A variant is summarised over the seeds that ran it (e.g. hazard on fewer seeds than basic).
        having = [r for r in results if variant in r["variants"]]
        block = {"seeds": [r["seed"] for r in having], "conditions": {}}
        # Conditions every seed has (results written before a condition was added lack it).
        present = [c for c in CONDITIONS if all(c in r["variants"][variant]["conditions"] for r in having)]
        for condition in present:
            metrics = {}
            for key, _, _ in METRICS + HAZARD_METRICS:
                per_seed = [r["variants"][variant]["conditions"][condition]["summary"].get(key) for r in having]
                if any(v is None for v in per_seed):
                    continue
                episodes = having[0]["variants"][variant]["conditions"][condition]["per_episode"].get(
                    key, [per_seed[0]]
                )
                mean, half, over = _interval(per_seed, episodes)
                metrics[key] = {"mean": mean, "ci95": half, "over": over, "per_seed": per_seed}
            block["conditions"][condition] = metrics
        pools = {
            c: [finite_values(r["variants"][variant]["conditions"][c]["per_episode"]["soo"]) for r in having]
            for c in BASELINES
        }
        block["classifier"] = classification_accuracy(pools["deceptive"], pools["honest"], CLASSIFIER_EPISODES)
        summary["variants"][variant] = block
    return summary


def _fmt(entry: dict, scale: float) -> str:
    mean, half = entry["mean"] * scale, entry["ci95"] * scale
    if np.isnan(half):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {half:.1f}"


SIDE_BY_SIDE = [
    ("red_trapped", "red at non-goal %", 100),
    ("red_trapped_blue_blind", "same, blue blind %", 100),
    ("agreement_honest", "= honest %", 100),
    ("agreement_deceptive", "= deceptive %", 100),
    ("soo", "mean SOO (x1e3)", 1000),
]


def side_by_side(summaries: dict[str, dict]) -> list[str]:
    """One row per run, variant and condition: the figures the definitions and protocols are compared on."""
    lines = [
        "## Side by side",
        "",
        "Mean SOO is measured under the run's own definition, so it compares conditions within a run, "
        "not runs with each other.",
        "",
        "| protocol | SOO definition | variant | condition | n seeds | "
        + " | ".join(t for _, t, _ in SIDE_BY_SIDE)
        + " |",
        "|---" * (len(SIDE_BY_SIDE) + 5) + "|",
    ]
    for key, summary in summaries.items():
        protocol, tag = key.split("/")
        for variant, block in summary["variants"].items():
            for condition, values in block["conditions"].items():
                cells = [_fmt(values[k], scale) if k in values else "n/a" for k, _, scale in SIDE_BY_SIDE]
                lines.append(
                    f"| {protocol} | {tag} | {variant} | {condition} | {len(block['seeds'])} | "
                    + " | ".join(cells)
                    + " |"
                )
    return lines + [""]


def markdown(summaries: dict[str, dict], runs: dict[str, list[dict]]) -> str:
    lines = [
        "# SOO in the physical deception task",
        "",
        "Runs: " + ", ".join(f"`{key}` ({len(runs[key])} seeds)" for key in runs) + ". "
        "Conditions: " + "; ".join(f"**{c}**: {note}" for c, note in CONDITION_NOTES.items()) + ".",
        "",
    ]
    lines += side_by_side(summaries)
    for key, summary in summaries.items():
        lines += run_markdown(key, summary, runs[key])
    return "\n".join(lines)


def run_markdown(key: str, summary: dict, results: list[dict]) -> list[str]:
    seeds = summary["seeds"]
    first = results[0]["config"]
    env = first["env"]
    co_trained = first["protocol"] == "co-trained"
    over = (
        "training seeds (Student-t)" if len(seeds) > 1 else "evaluation episodes of the single seed (not across seeds)"
    )
    lines = [
        f"## Run `{key}`",
        "",
        f"Seeds: {seeds} (n = {len(seeds)}). Environment: visibility radius {env['visibility_radius']}, "
        f"{env['reward_shape']} rewards. Per seed and variant: {first['honest_episodes']} episodes for the honest pair, "
        f"{first['deceptive_episodes']} for the deceptive "
        + ("pair (both agents learning, from scratch)" if co_trained else "blue (against the honest pair's frozen red)")
        + f", {first['finetune_episodes']} fine-tuning episodes per fine-tuned condition"
        + (" (red keeps learning)" if co_trained else "")
        + f", {first['eval_episodes']} greedy evaluation episodes per condition (the same evaluation seeds for every "
        f"condition). SOO: definition `{results[0]['soo_definition']}`, fine-tuning term `{results[0]['soo_distance']}`. "
        f"Cells: mean ± 95% interval over {over}.",
        "Compute per seed (training stages as first trained + this evaluation, one CPU core each): "
        + ", ".join(f"seed {r['seed']} {_seed_minutes(r):.1f} min" for r in results)
        + ".",
        "",
        "Each condition plays against its own red (co-trained)."
        if co_trained
        else "Every condition plays against the same red (the honest pair's, frozen after its training).",
        "",
    ]
    for variant, block in summary["variants"].items():
        metrics = METRICS + (HAZARD_METRICS if variant == "hazard" else [])
        title = (
            "basic task" if variant == "basic" else "hazard variant (a hazard only red sees; both pay for entering it)"
        )
        if block["seeds"] != seeds:
            title += f", seeds {block['seeds']} (n = {len(block['seeds'])})"
        lines += [
            f"### {title}",
            "",
            "| condition | " + " | ".join(m[1] for m in metrics) + " |",
            "|---" * (len(metrics) + 1) + "|",
        ]
        for condition, values in block["conditions"].items():
            lines.append(f"| {condition} | " + " | ".join(_fmt(values[k], s) for k, _, s in metrics) + " |")
        clf = block["classifier"]
        lines += [
            "",
            f"SOO classifier (deceptive = the policy with the larger mean SOO value, i.e. less self-other "
            f"overlap; rule fixed in advance): accuracy over {clf['pairs']} (deceptive, honest) policy pairs "
            f"x {clf['draws']} random draws of n evaluation episodes (without replacement from each policy's "
            f"{first['eval_episodes']}-episode pool, so draws overlap for large n).",
            "",
            "| episodes n | " + " | ".join(str(n) for n in clf["episodes"]) + " |",
            "|---" * (len(clf["episodes"]) + 1) + "|",
            "| accuracy % | " + " | ".join(f"{100 * a:.1f}" for a in clf["accuracy"]) + " |",
            "| worst pair % | " + " | ".join(f"{100 * a:.1f}" for a in clf["pair_min"]) + " |",
            "",
        ]
    prefix = plot_prefix(key)
    lines += [
        f"Plots: `{prefix}learning_curves.png`, `{prefix}classifier_accuracy.png`, `{prefix}behaviour.png`. "
        f"Raw numbers: `summary.json`, per seed `seed_*/results_{key.replace('/', '_')}.json`, and each stage's "
        "learning curve `curve.csv` in its folder.",
        "",
    ]
    return lines


def plot_prefix(key: str) -> str:
    return key.replace("/", "_") + "_"


CLASSIFIER_ONLY_EPISODES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]


def load_classifier_runs(out_dir: Path) -> dict[str, list[dict]]:
    """{"<protocol>/<definition tag>": per-seed classifier data, by seed} (`run --classifier_only`)."""
    runs: dict[str, list[dict]] = {}
    for path in Path(out_dir).glob("seed_*/classifier_*.json"):
        data = json.loads(path.read_text())
        runs.setdefault(run_key(data), []).append(data)
    return {key: sorted(runs[key], key=lambda r: r["seed"]) for key in sorted(runs)}


def classifier_markdown(out_dir: Path, runs: dict[str, list[dict]]) -> tuple[str, dict]:
    lines = [
        "# The SOO classifier over independently trained pairs",
        "",
        "Each seed trains one honest and one deceptive pair (the baselines of the main experiment, shared with "
        "it) and plays each for the given number of greedy evaluation episodes. For every (deceptive, honest) "
        "pair of policies across seeds and every n, 500 random subsets of n episodes are drawn from each "
        "policy's pool; accuracy = how often the deceptive policy has the larger mean SOO value (less "
        "self-other overlap). The rule is fixed in advance, not fitted. Episodes without a (self, other) pair "
        "(definition `authors`, red in view throughout) have no SOO value and are left out of the pools.",
        "",
    ]
    summary = {}
    for key, seeds in runs.items():
        first = seeds[0]["config"]
        lines += [
            f"## Run `{key}`",
            "",
            f"Seeds: n = {len(seeds)} ({seeds[0]['seed']}..{seeds[-1]['seed']}); {first['eval_episodes']} evaluation "
            f"episodes per policy; visibility radius {first['env']['visibility_radius']}, {first['env']['reward_shape']} "
            f"rewards; baselines {first['honest_episodes']} + {first['deceptive_episodes']} episodes. "
            "Compute per seed (both baselines as first trained + this evaluation, all variants, one core): median "
            f"{np.median([_classifier_seconds(r) for r in seeds]) / 60:.1f} min.",
            "",
        ]
        summary[key] = {}
        for variant in seeds[0]["variants"]:
            pools = baseline_pools(seeds, variant)
            clf = classification_accuracy(pools["deceptive"], pools["honest"], CLASSIFIER_ONLY_EPISODES)
            clf["one_episode"] = one_episode_separation(pools["deceptive"], pools["honest"])
            trapped = {b: [r["variants"][variant][b]["red_trapped"] for r in seeds] for b in BASELINES}
            clf["seeds"] = [r["seed"] for r in seeds]
            clf["red_trapped"] = {b: float(np.mean(v)) for b, v in trapped.items()}
            summary[key][variant] = clf
            names = [
                f"dec {clf['seeds'][i]} / hon {clf['seeds'][j]}"
                if low < 1
                else "none below 100"  # no worst pair to name
                for (i, j), low in zip(clf["worst_pair"], clf["pair_min"])
            ]
            lines += [
                f"### {variant}",
                "",
                f"{clf['pairs']} (deceptive, honest) pairs; red ends at the non-goal landmark in "
                f"{100 * clf['red_trapped']['deceptive']:.1f}% of the deceptive and {100 * clf['red_trapped']['honest']:.1f}% "
                "of the honest baselines' episodes (mean over seeds).",
                "",
                "| episodes n | " + " | ".join(str(n) for n in clf["episodes"]) + " |",
                "|---" * (len(clf["episodes"]) + 1) + "|",
                "| accuracy % | " + " | ".join(f"{100 * a:.1f}" for a in clf["accuracy"]) + " |",
                "| worst pair % | " + " | ".join(f"{100 * a:.1f}" for a in clf["pair_min"]) + " |",
                "| worst pair (seeds) | " + " | ".join(names) + " |",
                "",
            ]
            one = clf["one_episode"]
            dec, hon = (clf["seeds"][k] for k in one["worst_pair"])
            lines += [
                f"Exactly, on single episodes (every deceptive episode against every honest one, no sampling): "
                f"{100 * one['accuracy']:.2f}% over the pairs, worst pair {100 * one['pair_min']:.2f}% (dec {dec} / "
                f"hon {hon}; its smallest deceptive-episode SOO / largest honest-episode SOO: "
                f"{one['worst_pair_margin']:.3g}, above 1 when any one episode tells the pair apart).",
                "",
            ]
        lines += [
            f"Plots: `{plot_prefix(key)}classifier_only.png` (accuracy), `{plot_prefix(key)}classifier_soo_values.png` "
            "(every episode's SOO value, honest vs deceptive).",
            "",
        ]
    return "\n".join(lines), summary


def _classifier_seconds(data: dict) -> float:
    return sum(
        sum(v or 0.0 for v in block["train_seconds"].values()) + block["eval_seconds"]
        for block in data["variants"].values()
    )


def write_classifier_report(out_dir: str | Path) -> Path | None:
    """classifier.md, classifier_summary.json and two plots per run; None when there is no data."""
    out_dir = Path(out_dir)
    runs = load_classifier_runs(out_dir)
    if not runs:
        return None
    text, summary = classifier_markdown(out_dir, runs)
    (out_dir / "classifier_summary.json").write_text(json.dumps(summary, indent=1))
    for key, variants in summary.items():
        plot_classifier(
            {"variants": {v: {"classifier": clf} for v, clf in variants.items()}},
            out_dir / f"{plot_prefix(key)}classifier_only.png",
        )
        plot_soo_values(runs[key], out_dir / f"{plot_prefix(key)}classifier_soo_values.png")
    path = out_dir / "classifier.md"
    path.write_text(text)
    return path


def write_report(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    runs = load_runs(out_dir)
    summaries = {key: summarise(results) for key, results in runs.items()}
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=1))
    report = out_dir / "report.md"
    report.write_text(markdown(summaries, runs))
    for key, summary in summaries.items():
        prefix = plot_prefix(key)
        plot_learning_curves(out_dir, summary, runs[key], out_dir / f"{prefix}learning_curves.png")
        plot_classifier(summary, out_dir / f"{prefix}classifier_accuracy.png")
        plot_behaviour(summary, out_dir / f"{prefix}behaviour.png")
    return report
