"""Shared-prefix KV reuse: the tokens every row of a batch starts with run once, for the batch.

Evaluation prompts of one scenario start with the same tokens (chat template, system prompt, the
scenario's opening: 20-30% of a prompt). Sorting a set of prompts by their token ids puts one
scenario's prompts side by side, so a batch's rows share that prefix; its KV cache is computed
once (batch 1) and repeated for the batch, and each row runs only its own tokens, left-padded
AFTER the shared part:

    [shared prefix | pad ... pad | row's own tokens]     attention mask [1..1 | 0..0 | 1..1]

Positions count real tokens (`cumsum(mask) - 1`), as `generate` does with left padding, so a row
sees exactly the positions it has alone; padding changes nothing but the last bits of the floats
(different matmul shapes). Used by forced-choice scoring (`soo.eval.forced_choice`) and batched
generation (`soo.eval.generation`).

A second level (`group_prefix`): sorted neighbours often agree beyond the batch's common prefix
(the same first name or item). Rows that agree on their first L tokens form a group; each group's
tokens between the common prefix and L run once (a row per group), and the cache is then copied
to the group's rows:

    [common prefix | group's tokens | pad ... pad | row's own tokens]

Forced choice uses both levels (1.12x over the common prefix alone); generation only the first,
since groups measured no faster there (docs/benchmarks/README.md#batched-generation).

Where sharing is not safe it is switched off (shared = 0) rather than approximated: models with a
sliding window narrower than the batch (the window counts cache slots, so the padding between the
shared part and a row's tokens would push real tokens out of it), and caches that cannot be
repeated per row or grown by `generate` (older transformers build a fixed-size cache for Gemma-2).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from soo.core.modeling import model_device
from soo.core.prompts import left_padded


def forward_arguments(model) -> tuple[str, dict]:
    """(name of the KV-cache argument, the argument that limits the LM head to the last position).

    transformers >= 5.23 names the cache `cache` (`past_key_values` is deprecated); older versions,
    such as a GPU node's preinstalled one, know only `past_key_values`. The LM head is a quarter of
    a small model's compute when it runs on every prompt position; `logits_to_keep` (older:
    `num_logits_to_keep`; models without it: the full logits) keeps the last one only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    keep = next(({name: 1} for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), {})
    return ("cache" if "cache" in parameters else "past_key_values"), keep


def cache_of(output):
    """The KV cache a forward returned (named `cache` or, in older transformers, `past_key_values`)."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def sliding_window(model) -> int | None:
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(config, "sliding_window", None)


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every row starts with (the rows' min and max in lexicographic
    order share the prefix of the whole set)."""
    first, last = min(rows), max(rows)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return length


def shared_prefix_length(model, rows: Sequence[Sequence[int]], extra_tokens: int) -> int:
    """How many leading tokens the batch `rows` can run once: their common prefix, leaving every
    row >= 1 token of its own (its last position's logits are what the caller needs), and 0 when
    the padded batch plus `extra_tokens` (option or new tokens) could reach a sliding window."""
    shared = min(common_prefix_length(rows), min(len(row) for row in rows) - 1)
    width = shared + max(len(row) - shared for row in rows) + extra_tokens
    window = sliding_window(model)
    return 0 if window is not None and width > window else max(shared, 0)


def group_prefix(rows: Sequence[Sequence[int]], shared: int) -> tuple[int, list[int]]:
    """A second level of sharing: (length, group of each row), where rows that agree on their
    first `length` tokens form a group whose tokens after the batch's `shared` prefix run once.

    Sorted prompts of one scenario share more than the batch's common prefix: neighbours often
    agree up to the second or third name/item (over the n = 250 protocol, 29% of the prompt tokens
    are each batch's common prefix; with this level, ~44%). `length` minimises the tokens run,
    groups x (length - shared) + rows x (longest row - length) (the last term counts the padding),
    keeps >= 1 own token per row, and must save more than a token per row to pay for the extra
    forward; otherwise (shared, [])."""
    limit = min(len(row) for row in rows) - 1
    ranked = sorted(rows)
    neighbours = [common_prefix_length(pair) for pair in zip(ranked, ranked[1:])]
    longest = max(len(row) for row in rows)
    best_length, best_cost = shared, len(rows) * (longest - shared) - len(rows)
    for length in range(shared + 1, limit + 1):
        groups = 1 + sum(agreed < length for agreed in neighbours)
        cost = groups * (length - shared) + len(rows) * (longest - length)
        if cost < best_cost:
            best_length, best_cost = length, cost
    if best_length == shared:
        return shared, []
    heads: dict[tuple[int, ...], int] = {}
    return best_length, [heads.setdefault(tuple(row[:best_length]), len(heads)) for row in rows]


def prefix_cache(model, prefix: Sequence[int]):
    """KV cache of `prefix` (one forward, batch 1), or None when the model's cache cannot be
    repeated per row."""
    _, keep_last = forward_arguments(model)
    output = model(input_ids=torch.tensor([list(prefix)], device=model_device(model)), use_cache=True, **keep_last)
    cache = cache_of(output)
    return cache if cache is not None and hasattr(cache, "batch_repeat_interleave") else None


def extend_by_groups(model, cache, rows: Sequence[Sequence[int]], shared: int, length: int, groups: list[int]):
    """`cache` (the batch's `shared` prefix, batch 1) extended to each row's first `length` tokens:
    each group's tokens from `shared` to `length` run once (one forward, a row per group, no
    padding), then the cache is copied to the group's rows."""
    heads = {group: row for row, group in reversed(list(enumerate(groups)))}  # first row of each group
    device = model_device(model)
    cache_argument, keep_last = forward_arguments(model)
    cache.batch_repeat_interleave(len(heads))
    segments = torch.tensor([list(rows[heads[group]][shared:length]) for group in range(len(heads))], device=device)
    output = model(
        input_ids=segments,
        attention_mask=torch.ones((len(heads), length), dtype=torch.long, device=device),
        position_ids=torch.arange(shared, length, device=device).expand(len(heads), -1),
        use_cache=True,
        **{cache_argument: cache},
        **keep_last,
    )
    cache = cache_of(output)
    cache.reorder_cache(torch.tensor(groups, device=device))
    return cache


def shared_prefix(
    model, rows: Sequence[Sequence[int]], extra_tokens: int, growable: bool = False, grouped: bool = True
):
    """(shared, cache) for a batch: how many leading tokens of each row are already in `cache`
    (one KV row per batch row); (0, None) when the batch has one row, shares nothing, or the cache
    cannot be used (with `growable`: cannot be extended by `generate`). With `grouped`, rows may
    differ within the shared part when a second level pays (`group_prefix`; plain DynamicCache
    only, whose rows can be picked); `split_padded` keeps each row's own tokens there."""
    shared = shared_prefix_length(model, rows, extra_tokens) if len(rows) > 1 else 0
    cache = prefix_cache(model, rows[0][:shared]) if shared else None
    dynamic = type(cache).__name__ == "DynamicCache"
    if cache is None or (growable and not dynamic):
        return 0, None
    length, groups = group_prefix(rows, shared) if grouped and dynamic else (shared, [])
    if groups:
        return length, extend_by_groups(model, cache, rows, shared, length, groups)
    cache.batch_repeat_interleave(len(rows))
    return shared, cache


def split_padded(rows: Sequence[Sequence[int]], shared: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of `rows` as [first `shared` tokens | left padding | own tokens]."""
    rest_ids, rest_mask = left_padded([row[shared:] for row in rows], pad_id)
    prefix = torch.tensor([list(row[:shared]) for row in rows], dtype=torch.long).reshape(len(rows), shared)
    input_ids = torch.cat([prefix, rest_ids], dim=1)
    attention_mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), rest_mask], dim=1)
    return input_ids, attention_mask
