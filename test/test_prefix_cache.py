"""Shared-prefix helpers: the common prefix, how much a batch may share, the padded layout."""

from __future__ import annotations

from types import SimpleNamespace

from soo.eval.prefix_cache import common_prefix_length, shared_prefix_length, split_padded


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


def test_embedded_model_answers_and_scores_are_unchanged_by_prefix_sharing():
    """On the real SmolLM2-135M-Instruct: shared-prefix generation gives the one-at-a-time strings
    and shared-prefix forced choice the from-scratch log-probs (the tiny-model tests' claim, on the
    model and prompts the evaluation actually uses)."""
    import torch

    from soo.core.modeling import load_model, load_tokenizer, resolve_model_path
    from soo.core.prompts import ANSWER_SUFFIXES, DEFAULT_ANSWER_PREFIX
    from soo.eval.forced_choice import answer_prefix, score_choices, score_reference, tokenize_choice
    from soo.eval.generation import DecodingConfig, generate_batched, generate_one_at_a_time
    from soo.eval.scenarios import build_eval_prompts

    path = resolve_model_path(None)
    tokenizer, model = load_tokenizer(path), load_model(path, dtype="float32")
    prompts = build_eval_prompts(["main", "perspectives"], n=2, seed=3, answer_suffix=ANSWER_SUFFIXES["mistral"])
    batch_sizes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    try:
        decoding = DecodingConfig(max_new_tokens=12, batch_size=4)
        shared = generate_batched(model, tokenizer, [p.prompt for p in prompts], decoding, progress=False)
        prefix_forwards = sum(1 for shape in batch_sizes if shape[0] == 1 and shape[1] > 1)
        items = [tokenize_choice(tokenizer, p.prompt, answer_prefix(DEFAULT_ANSWER_PREFIX, p),
                                 (p.deceptive_option, p.honest_option)) for p in prompts]
        scores = score_choices(model, tokenizer, items, batch_size=4, progress=False)
    finally:
        hook.remove()
    assert prefix_forwards == 2  # one per batch of 4: the two scenarios' prompts sorted apart
    assert shared == generate_one_at_a_time(model, tokenizer, [p.prompt for p in prompts], decoding, progress=False)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(score_reference(model, tokenizer, items)),
                               rtol=1e-4, atol=1e-4)
