"""Each condition's training stage of one seed: trained, saved, and reused when run again. The
conditions and protocols are in soo.rl.config; one seed end to end (evaluation, results files) is
soo.rl.seed.

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

from soo.core.cell_lock import CellLock
from soo.rl.config import FINETUNES, VARIANTS, RLExperimentConfig, depends_on_definition
from soo.rl.env import BLUE_INDEX, N_ACTIONS, RED_INDEX, DeceptionEnvConfig
from soo.rl.finetune_loss import FinetuneLoss
from soo.rl.maddpg import MADDPG
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
    with other settings would silently mix experiments, so that is an error instead.

    The stage's lock (soo.core.cell_lock) is taken before the checkpoint check: a stage another
    runner is training is waited for (the next stages need it), then reused."""
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    with CellLock(folder, str(folder), log=lambda line: print(line, flush=True), wait=True):
        return _reuse_or_train(folder, make, settings)


def _reuse_or_train(folder: Path, make: Callable[[], tuple[MADDPG, list[dict]]], settings: dict) -> MADDPG:
    checkpoint = folder / "checkpoint"
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


def train_seconds(folder: Path) -> float | None:
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
