"""One seed end to end: every condition's stage (soo.rl.stages) trained or reused, evaluated under
each SOO definition, and the results files written (their layout: soo.rl.stages).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from soo.rl.config import BASELINES, CONDITIONS, FINETUNES, VARIANTS, RLExperimentConfig
from soo.rl.env import BLUE_INDEX
from soo.rl.evaluation import evaluate, results_view, with_soo
from soo.rl.maddpg import MADDPG, Actor
from soo.rl.overlap import SOODefinition
from soo.rl.stages import (
    Baselines,
    classifier_path,
    finetuned_stage,
    results_path,
    stage_folder,
    train_baselines,
    train_seconds,
)


def baseline_soo_range(pairs: Baselines, definition: SOODefinition) -> float:
    """The deceptive baseline's mean SOO on 50 probe episodes: the top of the random control's range."""
    probe = evaluate(pairs.deceptive, pairs.deceptive_env, 50, pairs.stage_seed + 9, {}, definition=definition)
    baseline_soo = probe["summary"]["soo"]
    if not np.isfinite(baseline_soo):
        raise RuntimeError(
            f"{definition.name} SOO: red was in view throughout the 50 probe episodes, so the random control "
            "has no SOO range to draw from"
        )
    return baseline_soo


def play_condition(
    config: RLExperimentConfig, agent: MADDPG, pairs: Baselines, seed: int, references: dict[str, Actor]
) -> dict:
    """One condition's evaluation play (with references) and its blue-blind replay's trapping."""
    played = evaluate(agent, pairs.deceptive_env, config.eval_episodes, config.eval_seed_offset + seed, references)
    blind = evaluate(
        agent, pairs.deceptive_env, config.eval_episodes, config.eval_seed_offset + seed, {}, blue_blind=True
    )
    played["summary"]["red_trapped_blue_blind"] = blind["summary"]["red_trapped"]
    played["per_episode"]["red_trapped_blue_blind"] = blind["per_episode"]["red_trapped"]
    return played


def run_definition(
    config: RLExperimentConfig,
    pairs: Baselines,
    mse: MADDPG,
    name: str,
    tag: str,
    seed: int,
    plays: dict[Path, dict],
    progress: bool,
) -> dict:
    """One variant under one SOO definition: fine-tune its conditions, evaluate every condition,
    write eval/<condition>.json. `plays` (stage folder -> its play) is shared by the definitions
    of a variant, so a stage they share is played once. Returns the variant's results block."""
    definition = config.definition(name)
    baseline_soo = baseline_soo_range(pairs, definition)
    agents = {"honest": pairs.honest, "deceptive": pairs.deceptive, "mse": mse}
    for condition in FINETUNES:
        if condition != "mse":
            agents[condition] = finetuned_stage(
                config, pairs, condition, definition, tag, (0.0, baseline_soo), seed, progress
            )
    references = {baseline: agents[baseline].actors[BLUE_INDEX] for baseline in BASELINES}
    folders = {c: stage_folder(pairs.out_root, pairs.variant, config.protocol, tag, c) for c in CONDITIONS}
    variant_results = {
        "baseline_soo_range": [0.0, baseline_soo],
        "train_seconds": {c: train_seconds(folders[c]) for c in CONDITIONS},
        "conditions": {},
        "stage_folders": {c: str(folders[c].relative_to(pairs.out_root)) for c in CONDITIONS},
    }
    eval_started = time.time()
    eval_dir = pairs.base / tag / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    for condition in CONDITIONS:
        if folders[condition] not in plays:
            plays[folders[condition]] = play_condition(config, agents[condition], pairs, seed, references)
        evaluation = results_view(with_soo(plays[folders[condition]], agents[condition].actors[BLUE_INDEX], definition))
        variant_results["conditions"][condition] = evaluation
        (eval_dir / f"{condition}.json").write_text(json.dumps(evaluation))
    variant_results["eval_seconds"] = round(time.time() - eval_started, 1)
    return variant_results


def run_seed(config: RLExperimentConfig, seed: int, out_dir: str | Path, progress: bool = True) -> dict[str, dict]:
    """Train, fine-tune and evaluate every condition of every variant for one seed, under each of
    the config's SOO definitions. Returns {definition tag: results} (also written as JSON)."""
    out_root = Path(out_dir) / f"seed_{seed}"
    protocol = config.protocol
    started = time.time()
    tags = {name: config.definition_tag(name) for name in config.soo_definitions}
    results = {
        tag: {
            "seed": seed,
            "protocol": protocol,
            "soo_definition": name,
            "soo_distance": config.soo_distance,
            "config": asdict(config),
            "variants": {},
        }
        for name, tag in tags.items()
    }
    for variant in config.variants:
        pairs = train_baselines(config, seed, variant, out_root, progress)
        mse = finetuned_stage(config, pairs, "mse", None, "", (0.0, 0.0), seed, progress)
        plays: dict[Path, dict] = {}  # stage folder -> its evaluation play
        for name, tag in tags.items():
            results[tag]["variants"][variant] = run_definition(config, pairs, mse, name, tag, seed, plays, progress)
    for tag in tags.values():
        results[tag]["wall_seconds"] = round(time.time() - started, 1)
        _keep_other_variants(results[tag], results_path(out_root, protocol, tag))
        results_path(out_root, protocol, tag).write_text(json.dumps(results[tag]))
    return results


def _keep_other_variants(result: dict, path: Path) -> None:
    """Carry over, into `result`, the variants an earlier run of the same settings wrote to `path`
    and this run did not redo (`--variants hazard` after a basic run must not drop basic's results).
    An earlier file with other settings is replaced whole, as before."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return

    # Which variants and which other definitions a run covered do not change one definition's numbers.
    def settings(config):
        return json.loads(
            json.dumps(  # JSON turns tuples into lists
                {key: value for key, value in config.items() if key not in ("variants", "soo_definitions")}
            )
        )

    if not isinstance(earlier, dict) or settings(earlier.get("config", {})) != settings(result["config"]):
        return
    merged = {**earlier.get("variants", {}), **result["variants"]}
    result["variants"] = {variant: merged[variant] for variant in VARIANTS if variant in merged}
    result["config"] = {**result["config"], "variants": list(result["variants"])}


def run_classifier_seed(
    config: RLExperimentConfig, seed: int, out_dir: str | Path, progress: bool = True
) -> dict[str, dict]:
    """The SOO classifier's data for one seed: the honest and the deceptive pair (the same stages
    `run_seed` trains, shared with it) and their per-episode mean SOO on `eval_episodes` greedy
    episodes, per variant and definition. No fine-tuning. Returns {definition tag: data}."""
    out_root = Path(out_dir) / f"seed_{seed}"
    started = time.time()
    data = {
        config.definition_tag(name): {
            "seed": seed,
            "protocol": config.protocol,
            "soo_definition": name,
            "soo_distance": config.soo_distance,
            "config": asdict(config),
            "variants": {},
        }
        for name in config.soo_definitions
    }
    for variant in config.variants:
        pairs = train_baselines(config, seed, variant, out_root, progress)
        eval_started = time.time()
        plays = {
            b: evaluate(
                getattr(pairs, b), pairs.deceptive_env, config.eval_episodes, config.eval_seed_offset + seed, {}
            )
            for b in BASELINES
        }  # played once; each definition measures SOO on the same play
        eval_seconds = round(time.time() - eval_started, 1)
        for name in config.soo_definitions:
            block = {"eval_seconds": eval_seconds}
            for baseline, played in plays.items():
                evaluation = with_soo(played, getattr(pairs, baseline).actors[BLUE_INDEX], config.definition(name))
                block[baseline] = {
                    "soo": evaluation["per_episode"]["soo"],
                    "red_trapped": evaluation["summary"]["red_trapped"],
                }
            block["train_seconds"] = {b: train_seconds(pairs.base / b) for b in BASELINES}
            data[config.definition_tag(name)]["variants"][variant] = block
    for tag, result in data.items():
        result["wall_seconds"] = round(time.time() - started, 1)
        classifier_path(out_root, config.protocol, tag).write_text(json.dumps(result))
    return data
