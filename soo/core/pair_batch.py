"""Self/other pairs as model input: tokenized pairs, the positions SOO compares, the collator.

The batch layout: for B pairs the collator builds 2B rows, [self_1..self_B; other_1..other_B],
padded on the right to the longest prompt in the batch (never to a fixed length), plus the
indices of the positions that SOO compares (see `soo.core.loss`). One forward over 2B rows
instead of two over B halves the parameter all-gathers under ZeRO-3. Training (the SOO term) and
evaluation (latent SOO) batch pairs through this one module, so both compare the same positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from soo.core.prompts import format_prompt, left_padded, right_padded


class PromptTooLongError(ValueError):
    pass


def tokenize_pair(record: dict, tokenizer, use_chat_template: bool = True, system_prompt: str | None = None) -> dict:
    """One pair as model input: {"id", "self_input_ids", "other_input_ids"}. The chat template is
    applied here, at training time, so one pairs file serves every model."""
    return {
        "id": record.get("id"),
        "self_input_ids": format_prompt(tokenizer, record["self_prompt"], use_chat_template, system_prompt),
        "other_input_ids": format_prompt(tokenizer, record["other_prompt"], use_chat_template, system_prompt),
    }


def check_lengths(
    ids: Sequence, self_rows: Sequence[Sequence[int]], other_rows: Sequence[Sequence[int]], max_length: int
) -> None:
    """PromptTooLongError when a pair's longer prompt exceeds `max_length` tokens. Truncation would
    cut the answer header that `last` mode relies on: refuse instead."""
    too_long = [
        (pair_id, max(len(a), len(b)))
        for pair_id, a, b in zip(ids, self_rows, other_rows)
        if max(len(a), len(b)) > max_length
    ]
    if too_long:
        longest = max(length for _, length in too_long)
        raise PromptTooLongError(
            f"{len(too_long)} pair(s) exceed --max_length {max_length} tokens (longest: {longest}, "
            f"first: id {too_long[0][0]}). Raise --max_length or shorten the prompts."
        )


def tokenize_pairs(
    dataset, tokenizer, max_length: int = 256, use_chat_template: bool = True, system_prompt: str | None = None
):
    """A `datasets.Dataset` of pairs (soo.data.pair_io.load_pairs) tokenized with `Dataset.map`:
    columns id, self_input_ids, other_input_ids. For a dataset read from files the result is
    cached beside them (keyed by the data, the tokenizer and these arguments), so a second run
    with the same data and model skips tokenizing."""
    tokenized = dataset.map(
        tokenize_pair,
        fn_kwargs={"tokenizer": tokenizer, "use_chat_template": use_chat_template, "system_prompt": system_prompt},
        remove_columns=[c for c in dataset.column_names if c != "id"],
        desc="tokenizing pairs",
    )
    check_lengths(tokenized["id"], tokenized["self_input_ids"], tokenized["other_input_ids"], max_length)
    return tokenized


class SOOPairDataset(Dataset):
    """Self/other prompt pairs from a list of records, tokenized once up front (`tokenize_pair`);
    for in-memory records (latent SOO, benchmarks). Training reads files through `tokenize_pairs`."""

    def __init__(
        self,
        records: Sequence[dict],
        tokenizer,
        max_length: int = 256,
        use_chat_template: bool = True,
        system_prompt: str | None = None,
    ):
        self.examples = [tokenize_pair(record, tokenizer, use_chat_template, system_prompt) for record in records]
        check_lengths(
            [e["id"] for e in self.examples],
            [e["self_input_ids"] for e in self.examples],
            [e["other_input_ids"] for e in self.examples],
            max_length,
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return self.examples[index]


def compared_span_start(self_ids: Sequence[int], other_ids: Sequence[int]) -> int:
    """First position where the two prompts can differ.

    Under causal attention every token of the shared prefix (system prompt, chat header, words
    before the first difference) has identical activations in both prompts: comparing them
    adds zeros and makes the loss scale with the template's length, so SOO starts here.
    """
    shortest = min(len(self_ids), len(other_ids))
    start = 0
    while start < shortest and self_ids[start] == other_ids[start]:
        start += 1
    return min(start, shortest - 1)


def aligned_positions(self_ids: Sequence[int], other_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs (self position, other position) compared in `full` mode.

    From the first difference on, the prompts are aligned with difflib on token ids: equal
    blocks are compared token by token, replaced spans ("You have" / "Bob has") position by
    position up to the shorter span, and tokens present in one prompt only are skipped.
    """
    start = compared_span_start(self_ids, other_ids)
    matcher = difflib.SequenceMatcher(None, list(self_ids[start:]), list(other_ids[start:]), autojunk=False)
    pairs = []
    for tag, self_begin, self_end, other_begin, other_end in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            span = min(self_end - self_begin, other_end - other_begin)
            pairs.extend((start + self_begin + k, start + other_begin + k) for k in range(span))
    if not pairs:  # identical prompts: compare the last tokens (distance 0)
        pairs = [(len(self_ids) - 1, len(other_ids) - 1)]
    return pairs


@dataclass
class SOOPairCollator:
    """Pads [self; other] rows and builds the SOO position indices.

    Output keys: input_ids, attention_mask, labels (-100 on padding) and, by token mode,
    align_pair / align_self_pos / align_other_pos (full, last) or span_mask (mean).

    By default rows are padded on the right to the batch's longest prompt. `fixed_length` and
    `padding_side` give the released code's layout instead (every prompt padded alone to one
    length, on the tokenizer's side); the compared positions are shifted with the padding, so
    the token modes still never compare a pad.
    """

    pad_token_id: int
    token_mode: str = "full"
    fixed_length: int | None = None
    padding_side: str = "right"

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got '{self.padding_side}'.")
        self_rows = [feature["self_input_ids"] for feature in features]
        other_rows = [feature["other_input_ids"] for feature in features]
        rows = self_rows + other_rows
        longest = max(len(row) for row in rows)
        width = longest if self.fixed_length is None else self.fixed_length
        if longest > width:
            raise PromptTooLongError(
                f"a prompt of {longest} tokens does not fit the fixed length {width}; raise --max_length."
            )
        pad = left_padded if self.padding_side == "left" else right_padded
        input_ids, attention_mask = pad(rows, self.pad_token_id, width)
        # Where each row's first real token sits (0 unless padded on the left).
        offsets = [width - len(row) if self.padding_side == "left" else 0 for row in rows]
        # The pad id may equal EOS, so padding is found from the mask, not from the id.
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
        }
        num_pairs = len(features)
        if self.token_mode == "mean":
            span_mask = torch.zeros_like(attention_mask)
            for pair, (self_ids, other_ids) in enumerate(zip(self_rows, other_rows)):
                start = compared_span_start(self_ids, other_ids)
                self_offset, other_offset = offsets[pair], offsets[num_pairs + pair]
                span_mask[pair, self_offset + start : self_offset + len(self_ids)] = 1
                span_mask[num_pairs + pair, other_offset + start : other_offset + len(other_ids)] = 1
            batch["span_mask"] = span_mask
            return batch
        triples = []
        for pair, (self_ids, other_ids) in enumerate(zip(self_rows, other_rows)):
            if self.token_mode == "last":
                compared = [(len(self_ids) - 1, len(other_ids) - 1)]
            elif self.token_mode == "full":
                compared = aligned_positions(self_ids, other_ids)
            else:
                raise ValueError(f"Unknown SOO token mode '{self.token_mode}'.")
            self_offset, other_offset = offsets[pair], offsets[num_pairs + pair]
            triples.extend((pair, self_offset + s, other_offset + o) for s, o in compared)
        align = torch.tensor(triples, dtype=torch.long)
        batch.update(align_pair=align[:, 0], align_self_pos=align[:, 1], align_other_pos=align[:, 2])
        return batch
