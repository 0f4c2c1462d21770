"""One seed end to end: each condition's training stage (saved, and reused when run again), its
evaluation, and the results files. The conditions and protocols are in soo.rl.config.

Layout under --output_dir:
  seed_N/<variant>/<protocol>/{honest,deceptive,mse}/             stages shared by definitions
  seed_N/<variant>/<protocol>/<definition>/{soo,random,soo_only}/
  seed_N/<variant>/<protocol>/<definition>/eval/<condition>.json   evaluation under that definition
  seed_N/results_<protocol>_<definition>.json
  seed_N/classifier_<protocol>_<definition>.json                   run_classifier_seed (baselines only)
Each finished stage is saved (safetensors) and reused when the command is run again, so an
interrupted seed resumes at the stage it was in.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from soo.rl.config import BASELINES, CONDITIONS, FINETUNES, VARIANTS, RLExperimentConfig, depends_on_definition
from soo.rl.env import BLUE_INDEX, N_ACTIONS, RED_INDEX, DeceptionEnvConfig
from soo.rl.evaluation import evaluate, results_view, with_soo
from soo.rl.finetune_loss import FinetuneLoss
from soo.rl.maddpg import MADDPG, Actor
from soo.rl.overlap import SOODefinition
from soo.rl.training import observation_dims, train


def write_curve(path: Path, curve: list[dict]) -> None:
    keys = sorted({k for row in curve for k in row}, key=lambda k: (k != "episode", k))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(curve)


class StageMismatch(RuntimeError):
    """A saved stage was trained with other settings than this run asks for."""


def _stage(folder: Path, make: Callable[[], tuple[MADDPG, list[dict]]], settings: dict) -> MADDPG:
    """Run a training stage (`make` returns the trained agent and its learning curve) unless its
    checkpoint exists (then load it).

    `settings` are what the stage depends on (stored with the checkpoint): reusing a stage trained
    with other settings would silently mix experiments, so that is an error instead."""
    checkpoint = folder / "checkpoint"
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    if (checkpoint / "meta.json").exists():
        saved = json.loads((checkpoint / "meta.json").read_text()).get("settings")
        if saved is not None and saved != settings:
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            raise StageMismatch(
                f"{folder} was trained with other settings ({', '.join(changed)}: "
                f"{ {k: saved.get(k) for k in changed} } there, { {k: settings.get(k) for k in changed} } now). "
                "Use another --output_dir, or delete that folder to retrain it."
            )
        print(f"  {folder.name}: reusing {checkpoint}", flush=True)
        return MADDPG.load(checkpoint)
    start = time.time()
    agent, curve = make()
    folder.mkdir(parents=True, exist_ok=True)
    write_curve(folder / "curve.csv", curve)
    seconds = time.time() - start
    agent.save(checkpoint, {"stage": folder.name, "train_seconds": round(seconds, 1), "settings": settings})
    last = curve[-min(len(curve), 500) :]
    print(
        f"  {folder}: {len(curve)} episodes in {seconds:.0f} s ({len(curve) / seconds:.0f}/s); last {len(last)}: "
        f"blue return {np.mean([r['blue_return'] for r in last]):.2f}, red trapped {100 * np.mean([r['red_trapped'] for r in last]):.1f}%",
        flush=True,
    )
    return agent


def stage_folder(out_root: Path, variant: str, protocol: str, definition_tag: str, condition: str) -> Path:
    """Where one stage lives (the module docstring's layout)."""
    base = Path(out_root) / variant / protocol
    return base / definition_tag / condition if depends_on_definition(condition) else base / condition


def results_path(out_root: Path, protocol: str, definition_tag: str) -> Path:
    return Path(out_root) / f"results_{protocol}_{definition_tag}.json"


def classifier_path(out_root: Path, protocol: str, definition_tag: str) -> Path:
    return Path(out_root) / f"classifier_{protocol}_{definition_tag}.json"


def _train_seconds(folder: Path) -> float | None:
    """A stage's training time as first trained (a rerun that reuses the stage does not reset it)."""
    return json.loads((folder / "checkpoint" / "meta.json").read_text()).get("train_seconds")


@dataclass
class Baselines:
    """One seed's and variant's honest and deceptive pairs, and what the later stages need."""

    honest: MADDPG
    deceptive: MADDPG
    deceptive_env: DeceptionEnvConfig
    stage_seed: int
    learning: list[bool]  # which agents learn after the honest pair
    settings: dict  # the deceptive stage's settings, which every fine-tuned stage extends
    base: Path  # seed_N/<variant>/<protocol>
    out_root: Path  # seed_N
    variant: str


def _train_honest(
    config: RLExperimentConfig,
    dims: list[int],
    honest_env: DeceptionEnvConfig,
    stage_seed: int,
    desc: str,
    progress: bool,
) -> tuple[MADDPG, list[dict]]:
    torch.manual_seed(stage_seed)
    agent = MADDPG(dims, N_ACTIONS, config.maddpg)
    return agent, train(agent, honest_env, config.honest_episodes, stage_seed, desc=desc, progress=progress)


def _train_deceptive(
    config: RLExperimentConfig,
    dims: list[int],
    deceptive_env: DeceptionEnvConfig,
    stage_seed: int,
    learning: list[bool],
    honest: MADDPG,
    desc: str,
    progress: bool,
) -> tuple[MADDPG, list[dict]]:
    torch.manual_seed(stage_seed + 1)
    agent = MADDPG(dims, N_ACTIONS, config.maddpg, trainable=learning)
    if config.protocol != "co-trained":  # frozen-red: blue plays against the honest pair's red
        for net in (agent.actors[RED_INDEX], agent.target_actors[RED_INDEX]):
            net.load_state_dict(honest.actors[RED_INDEX].state_dict())
    return agent, train(agent, deceptive_env, config.deceptive_episodes, stage_seed + 1, desc=desc, progress=progress)


def train_baselines(config: RLExperimentConfig, seed: int, variant: str, out_root: Path, progress: bool) -> Baselines:
    """The honest and the deceptive pair of one variant (trained, or reused from their folders)."""
    protocol = config.protocol
    co_trained = protocol == "co-trained"
    env_config = replace(config.env, hazard=(variant == "hazard"))
    # Fixed per variant name, not by its place in --variants: `--variants hazard` alone trains the
    # same hazard stages as the default `basic hazard`, and reuses them.
    stage_seed = seed * 100 + VARIANTS.index(variant) * 10
    honest_env = replace(env_config, reward_mode="honest")
    deceptive_env = replace(env_config, reward_mode="deceptive")
    dims = observation_dims(env_config)
    # Which agents learn after the honest pair: red too under co-trained, blue alone under frozen-red.
    learning = [co_trained, True]
    honest_settings = {
        "protocol": protocol,
        "env": asdict(env_config),
        "maddpg": asdict(config.maddpg),
        "honest_episodes": config.honest_episodes,
        "seed": stage_seed,
    }
    deceptive_settings = {**honest_settings, "deceptive_episodes": config.deceptive_episodes}
    if co_trained:  # the deceptive pair does not start from the honest one
        deceptive_settings = {k: v for k, v in deceptive_settings.items() if k != "honest_episodes"}
    base = stage_folder(out_root, variant, protocol, "", "honest").parent
    honest = _stage(
        base / "honest",
        partial(_train_honest, config, dims, honest_env, stage_seed, f"{out_root.name} {variant} honest", progress),
        honest_settings,
    )
    deceptive = _stage(
        base / "deceptive",
        partial(
            _train_deceptive,
            config,
            dims,
            deceptive_env,
            stage_seed,
            learning,
            honest,
            f"{out_root.name} {variant} deceptive",
            progress,
        ),
        deceptive_settings,
    )
    return Baselines(
        honest, deceptive, deceptive_env, stage_seed, learning, deceptive_settings, base, out_root, variant
    )


def _train_finetuned(
    config: RLExperimentConfig,
    pairs: Baselines,
    loss_mode: str,
    mse_weight: float,
    stage_offset: int,
    definition: SOODefinition | None,
    random_range: tuple[float, float],
    desc: str,
    progress: bool,
) -> tuple[MADDPG, list[dict]]:
    """The deceptive pair, fine-tuned with FinetuneLoss from its own seed (stage_seed + 5 + offset)."""
    checkpoint = pairs.base / "deceptive" / "checkpoint"
    agent = MADDPG.load(checkpoint, trainable=pairs.learning)
    frozen = MADDPG.load(checkpoint).actors[BLUE_INDEX].requires_grad_(False)
    generator = torch.Generator().manual_seed(pairs.stage_seed + 5 + stage_offset)
    loss = FinetuneLoss(loss_mode, frozen, config.soo_weight, mse_weight, random_range, generator, definition)
    curve = train(
        agent,
        pairs.deceptive_env,
        config.finetune_episodes,
        pairs.stage_seed + 5 + stage_offset,
        loss,
        desc=desc,
        progress=progress,
    )
    return agent, curve


def finetuned_stage(
    config: RLExperimentConfig,
    pairs: Baselines,
    condition: str,
    definition: SOODefinition | None,
    tag: str,
    random_range: tuple[float, float],
    seed: int,
    progress: bool,
) -> MADDPG:
    """One fine-tuned condition (FINETUNES) of one variant under one definition (trained, or reused)."""
    mode, with_mse = FINETUNES[condition]
    mse_weight = config.mse_weight if with_mse else 0.0
    settings = {
        **pairs.settings,
        "finetune_episodes": config.finetune_episodes,
        "mode": mode,
        "soo_weight": config.soo_weight if mode != "mse" else None,
        "mse_weight": mse_weight,
    }
    if mode != "mse":
        settings["soo_definition"], settings["soo_distance"] = definition.name, definition.distance
    make = partial(
        _train_finetuned,
        config,
        pairs,
        mode,
        mse_weight,
        list(FINETUNES).index(condition),
        definition,
        random_range,
        f"seed {seed} {pairs.variant} {condition} {tag}".rstrip(),
        progress,
    )
    return _stage(stage_folder(pairs.out_root, pairs.variant, config.protocol, tag, condition), make, settings)


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
        "train_seconds": {c: _train_seconds(folders[c]) for c in CONDITIONS},
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
            block["train_seconds"] = {b: _train_seconds(pairs.base / b) for b in BASELINES}
            data[config.definition_tag(name)]["variants"][variant] = block
    for tag, result in data.items():
        result["wall_seconds"] = round(time.time() - started, 1)
        classifier_path(out_root, config.protocol, tag).write_text(json.dumps(result))
    return data
