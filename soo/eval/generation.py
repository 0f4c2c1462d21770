"""Batched generation, greedy by default (one prompt at a time kept as the reference).

Decoding is greedy (``do_sample=False``), as in the paper's evaluation protocol (the official code
generates with greedy decoding): a response is a deterministic function of (model, prompt,
decoding settings), which is what makes the cache and the batched/sequential comparison meaningful.
``temperature > 0`` samples instead (subliminal learning's teachers and trait questions, T = 1):
pure sampling from the softmax at that temperature, no top-k/top-p; reproducible only for a fixed
torch seed and batch composition (``soo.subliminal.teacher`` seeds each fixed chunk).

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

The resumable JSONL cache over this (`GenerationCache`, `generate_with_cache`) is
``soo.eval.generation_cache``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from soo.core.modeling import (
    eval_mode,
    model_device,
    resolve_eos_token_ids,
    resolve_pad_token_id,
)
from soo.core.prompts import format_prompt
from soo.eval.prefix_cache import forward_arguments, shared_prefix, split_padded


@dataclass(frozen=True)
class DecodingConfig:
    """How responses are generated: greedy (``temperature`` 0, the paper's protocol) or sampled.

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
    temperature: float = 0.0  # 0: greedy; > 0: sampling at this temperature

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

    def key_fields(self) -> dict:
        """Everything that can change a response (the cache key); batch_size is excluded, see above."""
        return {
            # Greedy keys stay as they were before sampling existed, so older caches still match.
            "decoding": "greedy" if self.temperature == 0 else f"sampled T={self.temperature:g}",
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


def _generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoding: DecodingConfig,
    pad_token_id: int,
    cache=None,
) -> torch.Tensor:
    """One `generate` call (greedy, or sampled at `decoding.temperature`); returns only the new
    tokens ([batch, <= max_new_tokens]).

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
    # Sampling is pure softmax sampling: the model's own top_k/top_p defaults are switched off.
    sampling = (
        {"do_sample": True, "temperature": decoding.temperature, "top_k": 0, "top_p": 1.0}
        if decoding.temperature > 0
        else {"do_sample": False}
    )
    try:
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            num_beams=1,
            **sampling,
            max_new_tokens=decoding.max_new_tokens,
            pad_token_id=pad_token_id,
            **passed,
        )
    finally:
        generation_config.max_length = saved_max_length
    return output[:, input_ids.shape[1] :].cpu()


def _decode_new_tokens(tokenizer, new_tokens: torch.Tensor, eos_ids: set[int]) -> tuple[list[str], list[bool]]:
    """Text of each row up to its first EOS (finished rows of a batch continue with padding), and
    whether the row reached an EOS at all (False: cut at max_new_tokens)."""
    texts, ended = [], []
    for row in new_tokens.tolist():
        end = next((position for position, token in enumerate(row) if token in eos_ids), None)
        ended.append(end is not None)
        texts.append(tokenizer.decode(row if end is None else row[:end], skip_special_tokens=True).strip())
    return texts, ended


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    decoding: DecodingConfig,
    progress: bool = True,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    share_prefix: bool = True,
    group_prefixes: bool = False,
    return_ended: bool = False,
) -> list[str] | tuple[list[str], list[bool]]:
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
    finished batches at once). With `return_ended` the result is (responses, ended): ended[i] is
    False when response i was cut at max_new_tokens instead of ending with EOS.
    """
    prompts = list(prompts)
    if not prompts:
        return ([], []) if return_ended else []
    token_ids = [format_generation_prompt(tokenizer, prompt, decoding) for prompt in prompts]
    if any(len(ids) == 0 for ids in token_ids):
        raise ValueError("An empty prompt formats to zero tokens; generation needs at least one.")
    key = (lambda index: token_ids[index]) if share_prefix else (lambda index: -len(token_ids[index]))
    order = sorted(range(len(prompts)), key=key)
    pad_token_id = resolve_pad_token_id(tokenizer, model)
    eos_ids = resolve_eos_token_ids(tokenizer, model)
    results: list[str | None] = [None] * len(prompts)
    ended: list[bool | None] = [None] * len(prompts)
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
            new_tokens = _generate(model, input_ids, attention_mask, decoding, pad_token_id, cache=cache)
            texts, batch_ended = _decode_new_tokens(tokenizer, new_tokens, eos_ids)
            for index, text, row_ended in zip(batch, texts, batch_ended):
                results[index], ended[index] = text, row_ended
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(list(batch), texts)
    return (results, ended) if return_ended else results


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
            new_tokens = _generate(model, ids, torch.ones_like(ids), decoding, pad_token_id)
            results.extend(_decode_new_tokens(tokenizer, new_tokens, eos_ids)[0])
            bar.update(1)
    return results
