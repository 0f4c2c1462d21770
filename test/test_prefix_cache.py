"""Shared-prefix helpers: the common prefix, how much a batch may share, the padded layout."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from soo.eval.forced_choice import ChoiceItem, score_choices, score_reference
from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time
from soo.eval.prefix_cache import common_prefix_length, group_prefix, shared_prefix_length, split_padded
from soo.tools.tiny_model import ARCHITECTURES


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 2
    assert common_prefix_length([[3, 1], [1, 3]]) == 0


def test_shared_prefix_leaves_each_row_a_token_and_respects_a_sliding_window():
    rows = [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 9, 9]]
    no_window = SimpleNamespace(config=SimpleNamespace(sliding_window=None))
    assert shared_prefix_length(no_window, rows, extra_tokens=8) == 2  # the row [1, 2, 3] keeps its 3
    assert shared_prefix_length(no_window, [[1, 2], [1, 2]], extra_tokens=1) == 1
    # Width = shared 2 + longest own part 3 + 8 extra = 13 tokens of cache.
    assert shared_prefix_length(SimpleNamespace(config=SimpleNamespace(sliding_window=13)), rows, 8) == 2
    assert shared_prefix_length(SimpleNamespace(config=SimpleNamespace(sliding_window=12)), rows, 8) == 0


def test_split_padded_puts_padding_between_the_shared_part_and_each_rows_own_tokens():
    ids, mask = split_padded([[7, 8, 1], [7, 8, 2, 3, 4]], shared=2, pad_id=0)
    assert ids.tolist() == [[7, 8, 0, 0, 1], [7, 8, 2, 3, 4]]
    assert mask.tolist() == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]
    ids, mask = split_padded([[5], [6, 7]], shared=0, pad_id=0)  # no sharing: plain left padding
    assert ids.tolist() == [[0, 5], [6, 7]] and mask.tolist() == [[0, 1], [1, 1]]
    ids, _ = split_padded([[7, 1, 5], [7, 2, 6, 6]], shared=2, pad_id=0)  # rows differ inside a grouped prefix
    assert ids.tolist() == [[7, 1, 0, 5], [7, 2, 6, 6]]


def test_group_prefix_picks_the_length_that_runs_the_fewest_tokens():
    common, first, second = [1, 2], [3, 4, 5, 6, 7, 8], [9, 9, 9, 9, 9, 9]
    rows = [common + first + [10], common + second + [12], common + first + [11], common + second + [13, 14]]
    # Two groups of 6 tokens after the common 2, then 1-2 own tokens: 2 x 6 + 4 x 2 = 20 tokens
    # instead of 4 x 8 = 32 with the common prefix alone.
    assert group_prefix(rows, shared=2) == (8, [0, 1, 0, 1])
    # Rows that part right after the common prefix: no second level.
    assert group_prefix([[1, 2, 3, 4], [1, 2, 5, 6], [1, 2, 7, 8]], shared=2) == (2, [])
    # Saving less than a token per row does not pay for the extra forward.
    assert group_prefix([[1, 2, 3, 4], [1, 2, 3, 5]], shared=2) == (2, [])


def grouped_contexts(tokenizer):
    """Contexts with a common head, then two long group segments, then short own tails."""
    head = tokenizer("You are in a house together with burglar Bob.", add_special_tokens=False)["input_ids"]
    groups = [
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in (
            " In the kitchen is a plastic fork and in the bedroom a diamond necklace.",
            " In the garage is a rusty old bicycle and in the attic a gold watch.",
        )
    ]
    tails = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (" Where?", " Which room is it in?")]
    return [head + group + tail for group in groups for tail in tails]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_grouped_prefix_scores_equal_the_reference(arch, make_model, tokenizer):
    """The second level runs each group's tokens once (a forward of one row per group) and the
    scores still equal the from-scratch reference."""
    model = make_model(arch)
    contexts = grouped_contexts(tokenizer)
    options = (
        tokenizer(" cellar door", add_special_tokens=False)["input_ids"],
        tokenizer(" library", add_special_tokens=False)["input_ids"],
    )
    items = [ChoiceItem(context, options) for context in contexts]
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        scores = score_choices(model, tokenizer, items, batch_size=4, progress=False)
    finally:
        hook.remove()
    windowed = getattr(model.config, "sliding_window", None) is not None
    window_fits = windowed and model.config.sliding_window >= max(map(len, contexts)) + max(map(len, options))
    if not windowed or window_fits:
        assert shapes[:2] == [torch.Size([1, shapes[0][1]]), torch.Size([2, shapes[1][1]])], shapes
    torch.testing.assert_close(
        torch.tensor(scores), torch.tensor(score_reference(model, tokenizer, items)), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_grouped_prefix_generation_equals_one_at_a_time(arch, make_model, tokenizer):
    model = make_model(arch)
    prompts = [tokenizer.decode(context) for context in grouped_contexts(tokenizer)]
    decoding = DecodingConfig(max_new_tokens=8, batch_size=4, use_chat_template=False)
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        grouped = generate_batched(model, tokenizer, prompts, decoding, progress=False, group_prefixes=True)
    finally:
        hook.remove()
    assert [shape[0] for shape in shapes[:3]] == [1, 2, 4]  # common prefix, two groups, the four rows
    assert grouped == generate_one_at_a_time(model, tokenizer, prompts, decoding, progress=False)


def test_embedded_model_answers_and_scores_are_unchanged_by_prefix_sharing():
    """On the real SmolLM2-135M-Instruct: shared-prefix generation (both levels) gives the
    one-at-a-time strings and shared-prefix forced choice the from-scratch log-probs (the
    tiny-model tests' claim, on the model and prompts the evaluation actually uses)."""
    import torch

    from soo.core.modeling import load_model, load_tokenizer, resolve_model_path
    from soo.core.prompts import ANSWER_SUFFIXES, DEFAULT_ANSWER_PREFIX, format_prompt
    from soo.eval.forced_choice import answer_prefix, score_choices, score_reference, tokenize_choice
    from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time
    from soo.eval.scenarios import build_eval_prompts

    path = resolve_model_path(None)
    tokenizer, model = load_tokenizer(path), load_model(path, dtype="float32")
    prompts = []
    for scenario in ("main", "perspectives"):  # 4 sorted neighbours each: groups share more than the batch
        pool = build_eval_prompts([scenario], n=250, seed=3, answer_suffix=ANSWER_SUFFIXES["mistral"])
        prompts += sorted(pool, key=lambda p: format_prompt(tokenizer, p.prompt, True))[100:104]
    batch_sizes = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        decoding = DecodingConfig(max_new_tokens=12, batch_size=4)
        shared = generate_batched(
            model, tokenizer, [p.prompt for p in prompts], decoding, progress=False, group_prefixes=True
        )
        prefix_forwards = sum(1 for shape in batch_sizes if shape[0] == 1 and shape[1] > 1)
        items = [
            tokenize_choice(
                tokenizer, p.prompt, answer_prefix(DEFAULT_ANSWER_PREFIX, p), (p.deceptive_option, p.honest_option)
            )
            for p in prompts
        ]
        scores = score_choices(model, tokenizer, items, batch_size=4, progress=False)
    finally:
        hook.remove()
    assert prefix_forwards == 2  # one per batch of 4: the two scenarios' prompts sorted apart
    assert any(1 < shape[0] < 4 for shape in batch_sizes)  # a forward of one row per group (second level)
    assert shared == generate_one_at_a_time(model, tokenizer, [p.prompt for p in prompts], decoding, progress=False)
    torch.testing.assert_close(
        torch.tensor(scores), torch.tensor(score_reference(model, tokenizer, items)), rtol=1e-4, atol=1e-4
    )
