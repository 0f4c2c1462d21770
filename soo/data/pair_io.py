"""Pairs files in and out: validated reading of a pairs JSONL file, pairs as a `datasets.Dataset`
(file, dataset folder, hub id), and the dataset card of a folder. What a pair is: soo.data.pair_generation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REQUIRED_KEYS = ("self_prompt", "other_prompt")


class PairDataError(ValueError):
    """A pairs file that cannot be used; the message names the file and line."""


def check_pair_record(record, where: str) -> dict:
    """One pair record, validated (PairDataError naming `where` otherwise): a JSON object with
    non-empty string values for ``REQUIRED_KEYS`` and a self prompt that differs from its other
    prompt; other keys are kept as they are."""
    if not isinstance(record, dict):
        raise PairDataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise PairDataError(
            f"{where}: missing required key(s) {', '.join(missing)}; keys present: {', '.join(record) or '(none)'}"
        )
    for key in REQUIRED_KEYS:
        value = record[key]
        if not isinstance(value, str) or not value.strip():
            raise PairDataError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    if record["self_prompt"] == record["other_prompt"]:
        # Identical rows give identical activations: the pair's SOO term is always 0.
        raise PairDataError(
            f"{where}: 'self_prompt' and 'other_prompt' are identical, so the pair "
            "carries no self/other difference (its SOO term is always 0)"
        )
    return record


def read_pairs_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a pairs JSONL file, validated; raises PairDataError naming file and line.

    Blank lines are skipped. Every record is checked by ``check_pair_record``. A record without
    "id" gets ``"line-<line number>"``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PairDataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PairDataError(f"{path}: is a directory, not a pairs file") from None

    records = []
    for lineno, raw_line in enumerate(data.split(b"\n"), start=1):
        where = f"{path}, line {lineno}"
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PairDataError(f"{where}: not valid UTF-8 ({error.reason})") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PairDataError(f"{where}: invalid JSON: {error}") from None
        record = check_pair_record(record, where)
        if "id" not in record:
            record = {"id": f"line-{lineno}", **record}
        records.append(record)
    if not records:
        raise PairDataError(f"{path}: contains no pairs (the file is empty or blank)")
    return records


def load_pairs(source: str | os.PathLike, split: str = "train"):
    """Pairs as a `datasets.Dataset`, every record validated (PairDataError naming the source).

    `source` is a pairs JSONL file (checked line by line first, so an error names the file and
    line; then read by `load_dataset("json")`, which caches it as Arrow and lets `Dataset.map`
    cache the tokenization), a folder `load_dataset` reads (e.g. one written by
    `generate_data.py --dataset_dir`; `split` picks the split), or a Hugging Face hub dataset id
    (offline, as compute nodes run: fetched into the cache beforehand). Records without "id" get
    "line-N" from a file (its line number) or "row-N" otherwise.
    """
    from datasets import load_dataset

    path = Path(source)
    if path.is_dir() and (path / f"{split}.jsonl").is_file():
        # A folder of SPLIT.jsonl files (generate_data.py --dataset_dir): read the split's file as a
        # file, so errors name its lines and an edited file is read again (load_dataset on the
        # folder can return a stale cached copy when offline).
        path = path / f"{split}.jsonl"
    if path.is_file() or path.suffix in (".jsonl", ".json"):  # a missing file is "file not found", not a hub id
        records = read_pairs_jsonl(path)
        try:
            dataset = load_dataset("json", data_files=str(path.resolve()), split="train")
        except Exception as error:  # e.g. a key whose values have different types in different lines
            raise PairDataError(f"{path}: the datasets library cannot read it as one table: {error}") from None
        if len(dataset) != len(records):
            raise PairDataError(
                f"{path}: the datasets library read {len(dataset)} records, the file has {len(records)}"
            )
        if "id" not in dataset.column_names or None in dataset["id"]:  # the ids read_pairs_jsonl gives (line-N)
            ids = [record["id"] for record in records]
            dataset = dataset.remove_columns([c for c in ("id",) if c in dataset.column_names]).add_column("id", ids)
        return dataset
    where = f"{source} (split {split})"
    try:
        dataset = load_dataset(str(source), split=split)
    except Exception as error:
        hint = (
            " (offline: fetch it on a machine with internet first, or pass a local JSONL file)"
            if not path.exists()
            else ""
        )
        raise PairDataError(
            f"{where}: cannot load pairs: {str(error).splitlines()[0] if str(error) else type(error).__name__}{hint}"
        ) from None
    for index, record in enumerate(dataset):
        check_pair_record(record, f"{where}, row {index}")
    if len(dataset) == 0:
        raise PairDataError(f"{where}: contains no pairs")
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", [f"row-{index}" for index in range(len(dataset))])
    return dataset


DATASET_CARD = "README.md"


def write_dataset_card(folder: str | os.PathLike) -> Path:
    """(Re)write FOLDER/README.md, a Hugging Face dataset card whose `configs` entry names every
    SPLIT.jsonl in the folder, so `load_dataset(FOLDER)` returns those splits and the folder can be
    pushed to the hub as it is (`hf upload USER/NAME FOLDER --repo-type dataset`)."""
    from soo.core.io import write_text_atomic

    folder = Path(folder)
    splits = sorted(path.stem for path in folder.glob("*.jsonl"))
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {split}.jsonl"]
    lines += [
        "task_categories:",
        "- text-generation",
        "tags:",
        "- self-other-overlap",
        "---",
        "",
        "# Self/other prompt pairs for SOO fine-tuning",
        "",
        "Written by `generate_data.py --dataset_dir` of the SOO fine-tuning toolkit. One JSON object per line:",
        "`self_prompt` and `other_prompt` (required: the same situation about the model itself and about "
        "another agent), `id`, `family`, `template`, `split` and the slots they were filled with. "
        "Training and test splits use disjoint names and items.",
        "",
        "Splits: "
        + ", ".join(
            f"`{split}` ({sum(1 for _ in (folder / f'{split}.jsonl').open(encoding='utf-8'))} pairs)"
            for split in splits
        )
        + ".",
        "",
    ]
    return write_text_atomic(folder / DATASET_CARD, "\n".join(lines))
