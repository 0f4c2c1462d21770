"""Reliability: what a crash, a full disk or a changed command may do to a run (docs/reliability.md).

Real training processes on the tiny Llama (`finetuning.py`, or test/scale_worker.py = finetuning.py
plus instruments): the mixed-recipe repro of issue 32 (another learning rate and layer on resume
must stop before training, naming each field) and a matching rerun that resumes and records both
segments; one rank of a 2-process ZeRO-3 run SIGKILLed at a random step; a checkpoint write that
fails with ENOSPC.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_scale import (
    REPO_ROOT,
    STEPS,
    WORKER,
    adapter_weights,
    common_args,
    one_process_worker,
    run_command,
    torchrun,
)

from soo.train.preemption import COMPLETE_MARKER
from soo.train.recipe import RECIPE_FILE, RecipeMismatchError, check_resume, data_fingerprint, differences


def _finetune(tiny_model_dir, data_files, out: Path, *flags: str) -> subprocess.CompletedProcess:
    """finetuning.py on the tiny Llama, saving every 2 steps; later flags override common_args'."""
    base = common_args(tiny_model_dir, data_files, out, 2)
    return run_command([sys.executable, "finetuning.py", *base, "--save_steps", "2", *flags])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_resume_under_another_recipe_stops_before_training_and_a_matching_one_resumes(
    tiny_model_dir, data_files, tmp_path
):
    out = tmp_path / "out"
    first = _finetune(
        tiny_model_dir, data_files, out, "--max_steps", "4", "--learning_rate", "1e-3", "--soo_layers", "1"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    recorded = json.loads((out / "checkpoint-4" / RECIPE_FILE).read_text())
    assert recorded["recipe"]["learning_rate"] == 1e-3 and recorded["recipe"]["soo_layers"] == [1]
    before = _snapshot(out)

    # The repro: more steps, another learning rate, another layer.
    mixed = _finetune(
        tiny_model_dir, data_files, out, "--max_steps", "6", "--learning_rate", "5e-2", "--soo_layers", "2"
    )
    assert mixed.returncode == 2, mixed.stderr[-3000:]
    error_lines = [line for line in mixed.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in mixed.stderr, mixed.stderr[-3000:]
    assert "learning_rate 0.001 -> 0.05" in error_lines[0]
    assert "soo_layers [1] -> [2]" in error_lines[0]
    assert "--resume_from_checkpoint no" in error_lines[0] and "--output_dir" in error_lines[0]
    assert "max_steps" not in error_lines[0]  # extending a run is allowed
    assert _snapshot(out) == before, "a refused resume must leave the run's folder as it was"

    # Same recipe, longer run, other logging cadence: resumes, and the record keeps both segments.
    matching = _finetune(
        tiny_model_dir,
        data_files,
        out,
        "--max_steps",
        "6",
        "--learning_rate",
        "1e-3",
        "--soo_layers",
        "1",
        "--logging_steps",
        "3",
    )
    assert matching.returncode == 0, matching.stderr[-3000:]
    assert "Resuming from" in matching.stderr + matching.stdout
    record = json.loads((out / "soo_run_config.json").read_text())
    assert record["recipe"] == recorded["recipe"]
    steps = [(segment["from_step"], segment["to_step"], segment["max_steps"]) for segment in record["segments"]]
    assert steps == [(0, 4, 4), (4, 6, 6)]
    assert "--max_steps 4" in record["segments"][0]["command"]
    assert "--max_steps 6" in record["segments"][1]["command"]


# --- Hard kill of one rank under ZeRO-3 ----------------------------------------------------------

# torchrun's agent notices a dead worker and stops the others: SIGTERM, then SIGKILL after its
# close timeout (30 s in torch.distributed.elastic). A survivor blocked in a collective with the
# dead rank is freed by that, not by gloo's 30-minute collective timeout; EXIT_BOUND_S leaves room
# for a loaded CI host.
EXIT_BOUND_S = 90


@pytest.fixture(scope="module")
def uninterrupted_zero3(tiny_model_dir, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("z3-uninterrupted") / "run"
    result = run_command([*torchrun(2), str(WORKER), *_zero3_args(tiny_model_dir, data_files, out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _zero3_args(tiny_model_dir, data_files, out: Path) -> list[str]:
    return [
        *common_args(tiny_model_dir, data_files, out, 2),
        "--max_steps",
        str(STEPS),
        "--save_steps",
        "2",
        "--deepspeed",
        str(REPO_ROOT / "ds_config_stage3.json"),
    ]


@pytest.mark.slow
def test_zero3_rank_killed_at_a_random_step_exits_in_bounded_time_and_resumes_to_the_same_adapter(
    uninterrupted_zero3, tiny_model_dir, data_files, tmp_path
):
    chooser = random.Random(int(os.environ.get("SOO_KILL_SEED", time.time_ns())))
    # After step 3 at the earliest, so that a checkpoint (every 2 steps) exists to resume from.
    step, rank = chooser.randint(3, STEPS - 1), chooser.choice([0, 1])
    out = tmp_path / "run"
    command = [*torchrun(2), str(WORKER), *_zero3_args(tiny_model_dir, data_files, out)]
    started = time.time()
    killed = run_command([*command, "--kill_at_step", str(step), str(rank)], timeout=EXIT_BOUND_S + 240)
    ended = time.time()
    where = f"(rank {rank} killed after step {step})"
    assert killed.returncode != 0, where
    kill_line = re.search(r"SIGKILLs itself after step \d+ at ([0-9.]+)", killed.stdout)
    assert kill_line, f"{where} the kill never happened:\n{killed.stdout[-2000:]}{killed.stderr[-2000:]}"
    seconds_to_exit = ended - float(kill_line.group(1))
    print(f"{where}: the job exited {seconds_to_exit:.1f} s after the kill ({ended - started:.0f} s in all)")
    assert seconds_to_exit < EXIT_BOUND_S, where
    assert not (out / "adapter_model.safetensors").exists(), where

    complete = sorted(int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{COMPLETE_MARKER}"))
    # The kill comes at the step's end, before that step's save: the last complete checkpoint is
    # the last even step before it, and no later checkpoint is marked complete.
    assert complete and complete[-1] == 2 * ((step - 1) // 2), (where, complete)

    resumed = run_command(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {out / f'checkpoint-{complete[-1]}'}" in resumed.stderr + resumed.stdout, where
    mine, reference = adapter_weights(out), adapter_weights(uninterrupted_zero3)
    assert mine.keys() == reference.keys()
    # The resumed run restores weights, optimizer, scheduler and RNG states from the checkpoint and
    # replays the same batches: equal to float32 rounding (the same tolerance as a one-process resume).
    worst = max((mine[name] - reference[name]).abs().max().item() for name in reference)
    print(f"{where}: largest |resumed - uninterrupted| adapter entry {worst:.2e}")
    for name in reference:
        torch.testing.assert_close(mine[name], reference[name], rtol=1e-4, atol=1e-6, msg=f"{name} {where}")


# --- Disk full during a save ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_resumes_cleanly(
    tiny_model_dir, data_files, tmp_path
):
    out = tmp_path / "run"
    command = [*one_process_worker(tiny_model_dir, data_files, out), "--save_steps", "2"]
    full = run_command([*command, "--enospc_at_checkpoint", "4"])
    assert full.returncode == 2, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert "No space left on device" in errors[0] and f"{out / 'checkpoint-2'}, is intact" in errors[0]
    assert not (out / "checkpoint-4" / COMPLETE_MARKER).exists()
    # The previous checkpoint is whole: marked, and its adapter and optimizer state load.
    previous = out / "checkpoint-2"
    assert (previous / COMPLETE_MARKER).is_file()
    assert adapter_weights(previous)
    assert torch.load(previous / "optimizer.pt", weights_only=True)["state"]

    resumed = run_command(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr + resumed.stdout
    assert "checkpoint-4: its save was interrupted" in log and f"Resuming from {previous}" in log
    reference = tmp_path / "reference"
    uninterrupted = run_command([str(reference) if part == str(out) else part for part in command])
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    mine, theirs = adapter_weights(out), adapter_weights(reference)
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-6, msg=name)


# --- Units ---------------------------------------------------------------------------------------


class _Config:
    max_steps, num_train_epochs, save_steps, logging_steps, dataloader_num_workers = 10, 3.0, 5, 1, 0


def test_differences_name_each_changed_field_old_to_new():
    old = {"learning_rate": 0.001, "soo_layers": [1], "seed": 0, "gone": "x"}
    new = {"learning_rate": 0.05, "soo_layers": [1], "seed": 0, "added": True}
    assert differences(old, new) == [
        'added "(unset)" -> true',
        'gone "x" -> "(unset)"',
        "learning_rate 0.001 -> 0.05",
    ]
    assert differences(old, dict(old)) == []


def test_the_data_hash_changes_with_the_data_and_not_with_the_hash_cache(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"a": 1}\n')
    first = data_fingerprint(str(data))
    data.write_text('{"a": 2}\n')
    assert data_fingerprint(str(data)) != first
    folder = tmp_path / "dataset"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "data.arrow").write_bytes(b"rows")
    hashed = data_fingerprint(str(folder))
    (folder / "train" / "cache-1234.arrow").write_bytes(b"a map cache datasets writes beside it")
    assert data_fingerprint(str(folder)) == hashed
    (folder / "train" / "data.arrow").write_bytes(b"other rows")
    assert data_fingerprint(str(folder)) != hashed
    assert data_fingerprint("someone/hub-dataset") is None


def test_check_resume_refuses_another_recipe_and_carries_the_segments(tmp_path):
    checkpoint = tmp_path / "checkpoint-8"
    checkpoint.mkdir()
    segment = {"from_step": 0, "to_step": 8, "command": "finetuning.py --max_steps 8"}
    (checkpoint / RECIPE_FILE).write_text(json.dumps({"recipe": {"seed": 0}, "segments": [segment]}))
    with pytest.raises(RecipeMismatchError, match=r"seed 0 -> 1"):
        check_resume(str(checkpoint), {"seed": 1}, _Config())
    history = check_resume(str(checkpoint), {"seed": 0}, _Config())
    assert history.segments == [segment] and history.current["from_step"] == 8
    assert [s["to_step"] for s in history.at_step(10)["segments"]] == [8, 10]


def test_a_checkpoint_from_before_recipes_resumes_with_a_warning(tmp_path, caplog):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    history = check_resume(str(checkpoint), {"seed": 0}, _Config())
    assert "resuming unchecked" in caplog.text
    assert history.at_step(6)["segments"][0] == {"from_step": 0, "to_step": 4, "command": "(not recorded)"}
