"""Prompt/completion records: the JSONL format every subliminal stage reads and writes.

One line per record, in the conversational prompt/completion format that TRL's SFTTrainer and
`datasets` read (the student's chat template is applied at training time):

    {"index": 17, "prompt": [{"role": "user", "content": "I give you ..."}],
     "completion": [{"role": "assistant", "content": "145, 267, 891"}], "truncated": false}

`truncated` (written by the teacher): the answer was cut at max_new_tokens, not ended by the model.

The teacher's system prompt is never part of a record: the student sees only the numbers task
and the numbers. Reading checks every line before anything else runs, so a malformed file stops
a command with one error line that names the line.
"""

from __future__ import annotations

import json
from pathlib import Path


class RecordError(ValueError):
    """A records file that is missing, malformed, or lacks prompt/completion."""


def make_record(index: int, prompt: str, completion: str, truncated: bool = False) -> dict:
    return {
        "index": index,
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
        "truncated": truncated,
    }


def prompt_text(record: dict) -> str:
    return record["prompt"][-1]["content"]


def completion_text(record: dict) -> str:
    return record["completion"][-1]["content"]


def _check(record, where: str) -> None:
    if not isinstance(record, dict) or "prompt" not in record or "completion" not in record:
        raise RecordError(f"{where}: a record needs 'prompt' and 'completion'")
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        turns = record[key]
        if not (
            isinstance(turns, list)
            and turns
            and all(isinstance(turn, dict) and isinstance(turn.get("content"), str) for turn in turns)
            and turns[-1].get("role") == role
        ):
            raise RecordError(f"{where}: '{key}' must be a list of chat turns ending with a {role} turn")


def read_records(path: str | Path, allow_torn_last_line: bool = False) -> list[dict]:
    """Every record of a JSONL file, checked. `allow_torn_last_line` drops an unparsable last
    line (a killed writer's) instead of refusing the file: used when resuming generation."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if allow_torn_last_line and number == len(lines):
                break
            raise RecordError(f"{path}:{number}: not valid JSON") from None
        _check(record, f"{path}:{number}")
        records.append(record)
    return records
