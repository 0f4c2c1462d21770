"""Batched greedy generation, with a JSONL cache that doubles as an audit log and a resume point.

Decoding is greedy (``do_sample=False``), as in the paper's evaluation protocol (the official code
generates with greedy decoding): a response is a deterministic function of (model, prompt,
decoding settings), which is what makes the cache and the batched/sequential comparison meaningful.

Batching. Prompts are formatted with the chat template (``soo.core.prompts.format_prompt``, the one place
that knows how a prompt is wrapped), sorted by their token ids so a batch holds prompts of one
scenario, LEFT-padded by hand (the repo's tokenizers pad on the right for training; we never touch
their ``padding_side``), and handed to ``model.generate`` with the attention mask. The tokens every
prompt of a batch starts with (chat template, system prompt, the scenario's opening) run once and
their KV cache is repeated for the batch (``soo.eval.prefix_cache``; the padding then sits between
that shared part and each row's own tokens). transformers derives ``position_ids`` from the
attention mask (``cumsum(mask) - 1``) for decoder-only models whose ``forward`` accepts
``position_ids`` (Llama, Mistral, Qwen2, Gemma-2/3), and extends them by one per new token, so a
padded prompt sees positions 0..L-1 exactly as it would alone (with rotary embeddings a constant
offset would change nothing mathematically anyway; the attention mask is what matters: without it
the prompt attends to the padding). Results come back in input order; each response is the decoded
new tokens up to the first EOS (the model's generation_config EOS ids plus the tokenizer's),
special tokens skipped, stripped.

Batched == one prompt at a time? Mathematically yes for greedy decoding; numerically, a padded
batch runs matmuls of other shapes, so logits can differ in the last bits and, rarely, flip a
near-tie argmax. `generate_one_at_a_time` (the official code's loop) is kept as the reference; see
``test/test_generation.py`` and ``benchmarks/generation.py`` for the measured agreement.

Cache. `GenerationCache` is one JSONL file, one line per (model, prompt, decoding) with the
response; lines are appended and fsynced batch by batch, so a killed run keeps every finished batch
and `generate_with_cache` picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from soo.core.modeling import (
    eval_mode,
    is_embedded_default,
    model_device,
    resolve_eos_token_ids,
    resolve_model_path,
    resolve_pad_token_id,
)
from soo.core.prompts import format_prompt
from soo.eval.prefix_cache import forward_arguments, shared_prefix, split_padded

CACHE_FIELDS = ("key", "model", "prompt", "decoding", "response")


@dataclass(frozen=True)
class DecodingConfig:
    """How responses are generated. Always greedy (``do_sample=False``): the paper's protocol.

    ``batch_size`` is deliberately NOT part of `key_fields` (so not of the cache key): greedy
    decoding does not depend on how prompts are grouped, and re-generating everything because
    the batch size changed would defeat the cache. Numerically, padding can flip a near-tie token
    in rare cases (measured in ``docs/benchmarks/generation.md``); the batch size that produced
    each cached response is still written to its cache line for auditing.
    """

    max_new_tokens: int = 32
    batch_size: int = 16
    use_chat_template: bool = True
    system_prompt: str | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

    def key_fields(self) -> dict:
        """Everything that can change a response (the cache key); batch_size is excluded, see above."""
        return {
            "decoding": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "use_chat_template": self.use_chat_template,
            "system_prompt": self.system_prompt,
        }


def format_generation_prompt(tokenizer, prompt: str, decoding: DecodingConfig) -> list[int]:
    """Token ids of `prompt` as the model sees it (chat template and answer header, or raw text)."""
    return format_prompt(tokenizer, prompt, decoding.use_chat_template, decoding.system_prompt)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _greedy_generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoding: DecodingConfig,
    pad_token_id: int,
    cache=None,
) -> torch.Tensor:
    """One `generate` call, greedy; returns only the new tokens ([batch, <= max_new_tokens]).

    `cache`: the KV cache of the first tokens of every row (`soo.eval.prefix_cache`); generate then
    runs only the rest of `input_ids` in its prefill.

    The decoding settings go in as keyword arguments, not as a GenerationConfig: transformers then
    knows which flags we set, and does not warn about sampling flags (temperature, top_p, ...) that
    the model's own generation_config.json carries and greedy decoding ignores. The model's
    generation_config is left as it was.
    """
    device = model_device(model)
    # A max_length in the model's generation_config (many hub configs carry one) would make
    # generate warn on every call that max_new_tokens takes precedence; hide it for the call only.
    generation_config = model.generation_config
    saved_max_length = generation_config.max_length
    generation_config.max_length = None
    passed = {forward_arguments(model)[0]: cache} if cache is not None else {}
    try:
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            num_beams=1,
            max_new_tokens=decoding.max_new_tokens,
            pad_token_id=pad_token_id,
            **passed,
        )
    finally:
        generation_config.max_length = saved_max_length
    return output[:, input_ids.shape[1] :].cpu()


def _decode_new_tokens(tokenizer, new_tokens: torch.Tensor, eos_ids: set[int]) -> list[str]:
    """Text of each row up to its first EOS (finished rows of a batch continue with padding)."""
    texts = []
    for row in new_tokens.tolist():
        for position, token in enumerate(row):
            if token in eos_ids:
                row = row[:position]
                break
        texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    decoding: DecodingConfig,
    progress: bool = True,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    share_prefix: bool = True,
    group_prefixes: bool = False,
) -> list[str]:
    """Greedy responses to `prompts`, in input order, generated `decoding.batch_size` at a time.

    With `share_prefix` prompts are sorted by their token ids, so a batch holds prompts of one
    scenario, and the tokens every prompt of the batch starts with run once
    (`soo.eval.prefix_cache`): generate's prefill runs only each row's own tokens. With
    `group_prefixes` neighbours that agree beyond that also run their common tokens once per
    group; off by default, since for generation it measured no faster (0.97x at batch 16 and 24
    new tokens, 1.03x at batch 32 and 75, docs/benchmarks/generation.md; forced choice gains
    1.12x). Without `share_prefix` prompts are sorted by token length (longest first: an
    out-of-memory error shows up in the first batch) and every prompt runs whole. Rows are
    left-padded by hand; the tokenizer is not modified. ``on_batch(indices, texts)`` is called
    after each batch with the input indices of its prompts and their responses (used to cache
    finished batches at once).
    """
    prompts = list(prompts)
    if not prompts:
        return []
    token_ids = [format_generation_prompt(tokenizer, prompt, decoding) for prompt in prompts]
    if any(len(ids) == 0 for ids in token_ids):
        raise ValueError("An empty prompt formats to zero tokens; generation needs at least one.")
    key = (lambda index: token_ids[index]) if share_prefix else (lambda index: -len(token_ids[index]))
    order = sorted(range(len(prompts)), key=key)
    pad_token_id = resolve_pad_token_id(tokenizer, model)
    eos_ids = resolve_eos_token_ids(tokenizer, model)
    results: list[str | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), disable=not progress, desc="generating", unit="prompt", dynamic_ncols=True)
    with eval_mode(model), torch.inference_mode(), bar:
        for start in range(0, len(order), decoding.batch_size):
            batch = order[start : start + decoding.batch_size]
            rows = [token_ids[index] for index in batch]
            shared, cache = (
                shared_prefix(model, rows, decoding.max_new_tokens, growable=True, grouped=group_prefixes)
                if share_prefix
                else (0, None)
            )
            input_ids, attention_mask = split_padded(rows, shared, pad_token_id)
            new_tokens = _greedy_generate(model, input_ids, attention_mask, decoding, pad_token_id, cache=cache)
            texts = _decode_new_tokens(tokenizer, new_tokens, eos_ids)
            for index, text in zip(batch, texts):
                results[index] = text
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(list(batch), texts)
    return results


def generate_one_at_a_time(
    model, tokenizer, prompts: Sequence[str], decoding: DecodingConfig, progress: bool = True
) -> list[str]:
    """The reference loop (as in the official code): one `generate` call per prompt, no padding.

    ``decoding.batch_size`` is ignored. Same formatting, greedy settings and decoding as
    `generate_batched`, so the two differ only in batching.
    """
    pad_token_id = resolve_pad_token_id(tokenizer, model)
    eos_ids = resolve_eos_token_ids(tokenizer, model)
    results = []
    bar = tqdm(
        total=len(prompts), disable=not progress, desc="generating (1 at a time)", unit="prompt", dynamic_ncols=True
    )
    with eval_mode(model), torch.inference_mode(), bar:
        for prompt in prompts:
            ids = torch.tensor([format_generation_prompt(tokenizer, prompt, decoding)], dtype=torch.long)
            new_tokens = _greedy_generate(model, ids, torch.ones_like(ids), decoding, pad_token_id)
            results.extend(_decode_new_tokens(tokenizer, new_tokens, eos_ids))
            bar.update(1)
    return results


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    config_hash = _sha256_file(config_file)[:16] if config_file is not None and config_file.is_file() else "none"
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
    adapter_config_hash = _sha256_file(adapter_config)[:16] if adapter_config.is_file() else "none"
    return (
        f"{fingerprint};adapter={adapter_dir.resolve()};adapter_sha256={_sha256_file(weights)[:16]};"
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
