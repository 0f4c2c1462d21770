"""Resume only the same recipe: what a checkpoint was trained with, checked before it is resumed.

An adapter's record (soo_run_config.json) is trusted by every report downstream, so a run that
resumes a checkpoint under other settings would write a record that lies about half its steps.
Every checkpoint therefore carries `RECIPE_FILE`: the settings that change the trained result
(`recipe_of`) and the history of the segments that trained it (which steps ran under which
command). On resume, `check_resume` compares the checkpoint's recipe with the new one and stops
the run before training, naming each differing field. What does not change the result (logging,
save cadence, workers, held-out data, a longer `max_steps` or more epochs) may differ; each
segment records the command and its step range.

Checkpoints written before recipes were recorded resume with a warning (nothing to compare).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from soo.core.io import file_sha256, write_json_atomic
from soo.train.config import SOO_FIELDS, ConfigError
from soo.train.distributed import zero_stage

logger = logging.getLogger("soo")

RECIPE_FILE = "soo_recipe.json"

# Fields of each argument group that change the trained adapter (the rest may differ on resume).
MODEL_FIELDS = (
    "dtype",
    "attn_implementation",
    "load_in_4bit",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
)
DATA_FIELDS = ("data_path", "max_length", "use_chat_template", "system_prompt", "padding_side")
# soo_early_exit skips layers that cannot change the loss: the same gradients, so not recipe.
SOO_RECIPE_FIELDS = tuple(name for name in SOO_FIELDS if name != "soo_early_exit")
TRAINING_FIELDS = (
    "seed",
    "data_seed",
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "optim",
    "optim_args",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_ratio",
    "warmup_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "fp16",
    "bf16",
)
# Recorded in each segment: they may change between segments without changing the recipe.
SEGMENT_FIELDS = ("max_steps", "num_train_epochs", "save_steps", "logging_steps", "dataloader_num_workers")

WAYS_OUT = (
    "resume with the same settings, or start over: --resume_from_checkpoint no (trains from step 0 "
    "into this folder) or a new --output_dir"
)


class RecipeMismatchError(ConfigError):
    """A checkpoint trained with other settings than the run that would resume it (exit 2)."""


def _plain(value):
    """JSON's view of a value (tuples -> lists, enums -> their strings), so records compare."""
    return json.loads(json.dumps(value, default=str))


def data_fingerprint(path: str | None) -> str | None:
    """sha256 of a local data file, or of a dataset folder's files (path + hash each, sorted);
    None for a hub dataset id (nothing local to hash)."""
    if not path:
        return None
    local = Path(path)
    if local.is_file():
        return file_sha256(local)
    if local.is_dir():
        import hashlib

        digest = hashlib.sha256()
        for file in sorted(p for p in local.rglob("*") if p.is_file() and "cache-" not in p.name):
            digest.update(f"{file.relative_to(local).as_posix()}:{file_sha256(file)}\n".encode())
        return digest.hexdigest()
    return None


def recipe_of(model_args, data_args, config, model_path: str) -> dict:
    """The settings that change the trained result, as plain JSON (resolved layers included)."""
    recipe = {"model_path": str(model_path)}
    recipe.update({name: getattr(model_args, name) for name in MODEL_FIELDS})
    recipe.update({name: getattr(data_args, name) for name in DATA_FIELDS})
    recipe["data_sha256"] = data_fingerprint(data_args.data_path)
    recipe.update({name: getattr(config, name) for name in SOO_RECIPE_FIELDS})
    # hasattr: transformers versions differ (warmup_ratio is gone from recent ones).
    recipe.update({name: getattr(config, name) for name in TRAINING_FIELDS if hasattr(config, name)})
    recipe["world_size"] = config.world_size
    recipe["zero_stage"] = zero_stage(config)
    return _plain(recipe)


def differences(old: dict, new: dict) -> list[str]:
    """'field old -> new' for every recipe field that differs (a field only one side has counts)."""
    missing = "(unset)"
    return [
        f"{name} {json.dumps(old.get(name, missing))} -> {json.dumps(new.get(name, missing))}"
        for name in sorted(set(old) | set(new))
        if old.get(name, missing) != new.get(name, missing)
    ]


@dataclass
class RunHistory:
    """The recipe of a run and the segments that trained it; written into every checkpoint."""

    recipe: dict
    segments: list[dict] = field(default_factory=list)  # the finished ones, oldest first
    current: dict = field(default_factory=dict)  # this process's segment; to_step set when recorded

    def at_step(self, step: int) -> dict:
        return {"recipe": self.recipe, "segments": [*self.segments, {**self.current, "to_step": step}]}


def start_segment(config, from_step: int) -> dict:
    return {
        "command": shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from_step": from_step,
        **_plain({name: getattr(config, name) for name in SEGMENT_FIELDS}),
    }


def checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def check_resume(checkpoint: str | None, recipe: dict, config) -> RunHistory:
    """The history this run continues; raises RecipeMismatchError if `checkpoint` had another recipe."""
    if checkpoint is None:
        return RunHistory(recipe=recipe, current=start_segment(config, 0))
    step = checkpoint_step(checkpoint)
    path = Path(checkpoint) / RECIPE_FILE
    if not path.is_file():
        logger.warning(
            "%s has no %s (written before recipes were recorded): resuming unchecked.", checkpoint, RECIPE_FILE
        )
        return RunHistory(
            recipe=recipe,
            segments=[{"from_step": 0, "to_step": step, "command": "(not recorded)"}],
            current=start_segment(config, step),
        )
    stored = json.loads(path.read_text(encoding="utf-8"))
    changed = differences(stored["recipe"], recipe)
    if changed:
        raise RecipeMismatchError(f"{checkpoint} was trained with another recipe ({'; '.join(changed)}): {WAYS_OUT}.")
    return RunHistory(recipe=recipe, segments=stored["segments"], current=start_segment(config, step))


def write_checkpoint_history(checkpoint_dir: str, history: RunHistory, step: int) -> None:
    write_json_atomic(Path(checkpoint_dir) / RECIPE_FILE, history.at_step(step))
