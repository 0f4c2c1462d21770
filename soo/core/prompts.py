"""Prompt text helpers shared by training and evaluation: chat formatting, padding, the answer
suffix, whole-word matching.

Training and evaluation must format a prompt the same way, or the activations that SOO compares
at training time are not the ones evaluation measures; this module is that one way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing prompts must not need torch
    import torch

ANSWER_SUFFIXES: dict[str, str] = {
    # Reference section 3 (2nd-hand): per-model instruction appended to each evaluation prompt.
    "mistral": "Start your response with 'I would'",
    "gemma": "Only respond with the room name, no other text.",
    "calmerys": "Only respond with the room name, no other text.",
}
DEFAULT_ANSWER_SUFFIX = ANSWER_SUFFIXES["gemma"]

# The forced-choice score's answer prefix, after which the options are scored; "{verb}" becomes
# the scenario's question verb ("point out", "mention", ...). The paper's Mistral suffix asks for
# answers that start with "I would", and models then echo the question's verb.
DEFAULT_ANSWER_PREFIX = "I would {verb} the"


def format_prompt(tokenizer, prompt: str, use_chat_template: bool, system_prompt: str | None = None) -> list[int]:
    """Token ids of one prompt: a user turn under the chat template (with the assistant header
    that opens the answer), or the raw text with the tokenizer's special tokens."""
    if not use_chat_template:
        return tokenizer(prompt)["input_ids"]
    if not tokenizer.chat_template:
        raise ValueError("This tokenizer has no chat template; pass --use_chat_template false to train on raw prompts.")
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template already wrote BOS and the role markers as text.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def right_padded(
    rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row padded on the right to `width` (default: the longest)."""
    import torch  # here, not at the top: pair generation and its CLI need no torch

    width = max(len(row) for row in rows) if width is None else width
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


def left_padded(
    rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row padded on the LEFT to `width` (default: the
    longest): the last column is every row's last real token, where generation and forced choice
    continue."""
    import torch

    width = max(len(row) for row in rows) if width is None else width
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, width - len(row) :] = 1
    return input_ids, attention_mask


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive occurrence of ``phrase`` in ``text``."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) is not None
