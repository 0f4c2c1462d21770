"""Files every stage writes or reads: atomic writes and the run record beside an adapter.

A crash or a preemption must never leave a half-written file that a later stage trusts, so every
result file goes through `write_text_atomic` (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

# What finetuning.py writes beside the adapter: model, data, SOO and Trainer settings of the run.
RUN_CONFIG_FILE = "soo_run_config.json"


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` so that `path` is either the old or the new file, never a torn one.

    The text goes to a temporary file in the same folder (same filesystem, so the rename is
    atomic), is fsynced and renamed over `path`. On any error the temporary file is removed and
    an existing `path` is left untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open with mode 0o666 lets the umask decide permissions, as for an ordinary file.
    fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Mapping]) -> Path:
    """One JSON object per line, atomically. Same records give the same bytes (key order kept, UTF-8)."""
    return write_text_atomic(
        path, "".join(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records)
    )


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, so best effort.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks (data files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_run_config(adapter_dir: str | os.PathLike) -> dict:
    """The run record finetuning.py wrote beside an adapter ({} if absent)."""
    path = Path(adapter_dir) / RUN_CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_yaml(path: str | os.PathLike, error: type[Exception], label: str):
    """The parsed contents of a YAML file; a missing, unreadable or malformed file raises `error`
    with one line that starts with `label` (e.g. "--config FILE", or the file's name)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise error(f"{label}: no such file.") from None
    except OSError as problem:
        raise error(f"{label}: cannot read it ({problem.strerror}).") from None
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(problem, "problem", None) or "invalid YAML"
        raise error(f"{path}: YAML syntax error{where}: {reason}.") from None
