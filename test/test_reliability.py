"""Reliability: a resumed run is the run its record says (docs/reliability.md).

The resume check runs real `finetuning.py` processes on the tiny Llama: the mixed-recipe repro of
issue 32 (a second command with another learning rate and layer must stop before training, with
each differing field), and a matching rerun with a longer `max_steps`, which must resume and
record both segments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soo.train.recipe import RECIPE_FILE, RecipeMismatchError, check_resume, data_fingerprint, differences

REPO_ROOT = Path(__file__).resolve().parent.parent


def _finetune(tiny_model_dir, data_files, out: Path, *flags: str) -> subprocess.CompletedProcess:
    train_path, _ = data_files
    command = [
        sys.executable,
        "finetuning.py",
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data_path",
        str(train_path),
        "--use_cpu",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--per_device_train_batch_size",
        "2",
        "--save_steps",
        "2",
        "--seed",
        "0",
        *flags,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


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
