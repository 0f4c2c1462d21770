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
