"""The resumable generation cache: responses keyed by (model, prompt, decoding) in one JSONL file.

`GenerationCache` is one JSONL file, one line per (model, prompt, decoding) with the
response; lines are appended and fsynced batch by batch, so a killed run keeps every finished batch
and `generate_with_cache` picks up where it stopped. The key names the model by `model_fingerprint` (base model and adapter, hashed), so retraining an
adapter in place never reuses its stale responses.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from soo.core.io import file_sha256
from soo.core.modeling import is_embedded_default, resolve_model_path
from soo.eval.generation import DecodingConfig, generate_batched

CACHE_FIELDS = ("key", "model", "prompt", "decoding", "response")


def cache_key(model_key: str, prompt: str, decoding: DecodingConfig | dict) -> str:
    """sha256 (hex) over a canonical JSON of (model key, prompt, decoding.key_fields())."""
    fields = decoding.key_fields() if isinstance(decoding, DecodingConfig) else decoding
    canonical = json.dumps([model_key, prompt, fields], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _valid_record(record) -> bool:
    if not isinstance(record, dict) or any(field not in record for field in CACHE_FIELDS):
        return False
    if not all(isinstance(record[field], str) for field in ("key", "model", "prompt", "response")):
        return False
    if not isinstance(record["decoding"], dict):
        return False
    # The key must be the one its own fields give: catches hand edits and mixed-up lines.
    return record["key"] == cache_key(record["model"], record["prompt"], record["decoding"])


class GenerationCache:
    """Responses keyed by (model key, prompt, decoding), stored as one JSONL file.

    Each line: {"key", "model", "prompt", "decoding" (key_fields), "response", "batch_size"}; the
    file is an audit log of what was generated with what. Lines that do not parse or lack fields
    (a killed run can leave a half-written last line) are skipped with one warning. Appends are
    flushed and fsynced batch by batch. One writer at a time (no file locking).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._responses: dict[str, str] = {}
        self.skipped_lines = 0
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not _valid_record(record):
                    self.skipped_lines += 1
                    continue
                self._responses[record["key"]] = record["response"]
        if self.skipped_lines:
            warnings.warn(
                f"Generation cache {self.path}: skipped {self.skipped_lines} corrupt or incomplete line(s) "
                "(e.g. the last line of a killed run); those prompts will be generated again.",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self._responses)

    def get(self, model_key: str, prompt: str, decoding: DecodingConfig) -> str | None:
        return self._responses.get(cache_key(model_key, prompt, decoding))

    def put_many(self, model_key: str, items: Sequence[tuple[str, str]], decoding: DecodingConfig) -> None:
        """Append (prompt, response) pairs; on disk (flushed and fsynced) when this returns."""
        if not items:
            return
        fields = decoding.key_fields()
        lines = []
        for prompt, response in items:
            key = cache_key(model_key, prompt, fields)
            record = {
                "key": key,
                "model": model_key,
                "prompt": prompt,
                "decoding": fields,
                "response": response,
                "batch_size": decoding.batch_size,
            }
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prefix = "\n" if self._ends_without_newline() else ""  # never glue a line onto a truncated one
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(prefix + "".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        for prompt, response in items:
            self._responses[cache_key(model_key, prompt, fields)] = response

    def _ends_without_newline(self) -> bool:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() == 0:
                    return False
                handle.seek(-1, os.SEEK_END)
                return handle.read(1) != b"\n"
        except FileNotFoundError:
            return False


def model_fingerprint(model_path: str | None, adapter_path: str | None = None) -> str:
    """A string naming (base model, adapter) for cache keys.

    Base model: its resolved path (the embedded default resolves to its converted directory) plus
    the sha256 of its config.json. Hashing the weights of a multi-GB model on every run would be
    slow, so the base is assumed not to change in place; a hub id resolves to its cached snapshot
    directory, whose name is the revision. Adapter: its resolved path plus the sha256 of
    adapter_model.safetensors (or .bin) and of adapter_config.json: retraining into the same
    directory changes the fingerprint, so stale cached responses are never reused.
    The dtype the model runs in is not included: callers that vary it should append it.
    """
    base_path = resolve_model_path(model_path) if is_embedded_default(model_path) else model_path
    base_dir = Path(os.path.expanduser(base_path))
    if base_dir.is_dir():
        config_file = base_dir / "config.json"
        base_id = str(base_dir.resolve())
    else:  # a hub id: look in the local hub cache only
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base_path, "config.json")
        config_file = Path(cached) if isinstance(cached, str) else None
        base_id = base_path if config_file is None else f"{base_path}@{config_file.parent.name}"
    config_hash = file_sha256(config_file)[:16] if config_file is not None and config_file.is_file() else "none"
    fingerprint = f"base={base_id};config_sha256={config_hash}"
    if adapter_path is None:
        return fingerprint

    adapter_dir = Path(os.path.expanduser(adapter_path))
    weights = next(
        (
            adapter_dir / name
            for name in ("adapter_model.safetensors", "adapter_model.bin")
            if (adapter_dir / name).is_file()
        ),
        None,
    )
    if weights is None:
        raise FileNotFoundError(f"No adapter_model.safetensors (or .bin) in adapter directory {adapter_dir}.")
    adapter_config = adapter_dir / "adapter_config.json"
    adapter_config_hash = file_sha256(adapter_config)[:16] if adapter_config.is_file() else "none"
    return (
        f"{fingerprint};adapter={adapter_dir.resolve()};adapter_sha256={file_sha256(weights)[:16]};"
        f"adapter_config_sha256={adapter_config_hash}"
    )


def generate_with_cache(
    model,
    tokenizer,
    prompts: Sequence[str],
    decoding: DecodingConfig,
    cache: GenerationCache | None,
    model_key: str,
    progress: bool = True,
) -> list[str]:
    """Responses to all `prompts`, in order; only prompts missing from `cache` are generated.

    Missing prompts are generated in batches (each distinct prompt once), and every finished
    batch is written to the cache before the next starts: after a kill, a rerun recomputes
    nothing that had finished. With ``cache=None`` this is `generate_batched` over distinct prompts.
    """
    prompts = list(prompts)
    known: dict[str, str] = {}
    missing: dict[str, None] = {}  # distinct prompts to generate, in first-seen order
    for prompt in prompts:
        if prompt in known or prompt in missing:
            continue
        cached = cache.get(model_key, prompt, decoding) if cache is not None else None
        if cached is None:
            missing[prompt] = None
        else:
            known[prompt] = cached
    missing = list(missing)

    if missing:

        def store(indices: list[int], texts: list[str]) -> None:
            batch = [(missing[index], text) for index, text in zip(indices, texts)]
            if cache is not None:
                cache.put_many(model_key, batch, decoding)
            known.update(batch)

        generate_batched(model, tokenizer, missing, decoding, progress=progress, on_batch=store)
    return [known[prompt] for prompt in prompts]
