"""Dataset, collator and `SOOTrainer`: LM loss plus the SOO term, in one forward pass.

The batch layout: for B pairs the collator builds 2B rows, [self_1..self_B; other_1..other_B],
padded on the right to the longest prompt in the batch (never to a fixed length), plus the
indices of the positions that SOO compares (see `soo.loss`). One forward over 2B rows instead
of two over B halves the parameter all-gathers under ZeRO-3.

Loss per micro-batch:  lm_weight * mean_seq(LM loss) + soo_weight * mean_pairs(SOO distance).
Both are means over examples, so `loss_is_scaled_for_ga = False` lets the Trainer divide by the
accumulation steps, and 2 micro-batches of 2 give exactly the gradient of one batch of 4.
"""

from __future__ import annotations

import difflib
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from transformers import Trainer

from soo.capture import ActivationCapture, ForwardStopped
from soo.distributed import zero_stage
from soo.preemption import mark_checkpoint_complete
from soo.loss import activation_spread_per_pair, lm_loss_per_sequence, soo_distance_per_pair


class PromptTooLongError(ValueError):
    pass


def format_prompt(tokenizer, prompt: str, use_chat_template: bool, system_prompt: str | None = None) -> list[int]:
    """Token ids of one prompt: a user turn under the chat template (with the assistant header
    that opens the answer), or the raw text with the tokenizer's special tokens."""
    if not use_chat_template:
        return tokenizer(prompt)["input_ids"]
    if not tokenizer.chat_template:
        raise ValueError(
            "This tokenizer has no chat template; pass --use_chat_template false to train on raw prompts."
        )
    messages = [{"role": "user", "content": prompt}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template already wrote BOS and the role markers as text.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class SOOPairDataset(Dataset):
    """Self/other prompt pairs, tokenized once up front.

    The chat template is applied here, at training time, so one JSONL file serves every model.
    """

    def __init__(self, records: Sequence[dict], tokenizer, max_length: int = 256, use_chat_template: bool = True,
                 system_prompt: str | None = None):
        self.examples = []
        too_long = []
        for record in records:
            self_ids = format_prompt(tokenizer, record["self_prompt"], use_chat_template, system_prompt)
            other_ids = format_prompt(tokenizer, record["other_prompt"], use_chat_template, system_prompt)
            if max(len(self_ids), len(other_ids)) > max_length:
                too_long.append((record.get("id"), max(len(self_ids), len(other_ids))))
            self.examples.append({"id": record.get("id"), "self_input_ids": self_ids, "other_input_ids": other_ids})
        if too_long:
            # Truncation would cut the answer header that `last` mode relies on: refuse instead.
            longest = max(length for _, length in too_long)
            raise PromptTooLongError(
                f"{len(too_long)} pair(s) exceed --max_length {max_length} tokens (longest: {longest}, "
                f"first: id {too_long[0][0]}). Raise --max_length or shorten the prompts."
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


def right_padded(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with every row padded on the right to `width` (default: the longest)."""
    width = max(len(row) for row in rows) if width is None else width
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, : len(row)] = 1
    return input_ids, attention_mask


@dataclass
class SOOPairCollator:
    """Pads [self; other] rows on the right and builds the SOO position indices.

    Output keys: input_ids, attention_mask, labels (-100 on padding) and, by token mode,
    align_pair / align_self_pos / align_other_pos (full, last) or span_mask (mean).
    """

    pad_token_id: int
    token_mode: str = "full"

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        self_rows = [feature["self_input_ids"] for feature in features]
        other_rows = [feature["other_input_ids"] for feature in features]
        input_ids, attention_mask = right_padded(self_rows + other_rows, self.pad_token_id)
        # The pad id may equal EOS, so padding is found from the mask, not from the id.
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, -100),
        }
        if self.token_mode == "mean":
            span_mask = torch.zeros_like(attention_mask)
            for pair, (self_ids, other_ids) in enumerate(zip(self_rows, other_rows)):
                start = compared_span_start(self_ids, other_ids)
                span_mask[pair, start : len(self_ids)] = 1
                span_mask[len(features) + pair, start : len(other_ids)] = 1
            batch["span_mask"] = span_mask
            return batch
        triples = []
        for pair, (self_ids, other_ids) in enumerate(zip(self_rows, other_rows)):
            if self.token_mode == "last":
                triples.append((pair, len(self_ids) - 1, len(other_ids) - 1))
            elif self.token_mode == "full":
                triples.extend((pair, s, o) for s, o in aligned_positions(self_ids, other_ids))
            else:
                raise ValueError(f"Unknown SOO token mode '{self.token_mode}'.")
        align = torch.tensor(triples, dtype=torch.long)
        batch.update(align_pair=align[:, 0], align_self_pos=align[:, 1], align_other_pos=align[:, 2])
        return batch


class NonFiniteLossError(FloatingPointError):
    pass


class SOOTrainer(Trainer):
    """transformers Trainer whose loss is `lm_weight * LM + soo_weight * SOO`.

    `soo_args` needs: lm_weight, soo_weight, soo_layers, soo_module, soo_token_mode
    (see `soo.config.SOOArguments`). Forward hooks are registered once, here, and kept.
    """

    # Our loss is a mean per micro-batch: the Trainer must divide it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, soo_args, **kwargs):
        training_args = kwargs.get("args")
        if training_args is not None:
            # Our batch keys (pair indices, span masks) are not model inputs; keep them.
            training_args.remove_unused_columns = False
            training_args.label_names = ["labels"]
        super().__init__(*args, **kwargs)
        # Never pass num_items_in_batch to the model: we compute both losses ourselves.
        self.model_accepts_loss_kwargs = False
        self.soo_args = soo_args
        self.capture = ActivationCapture(self.model, soo_args.soo_layers, soo_args.soo_module)
        # SOO-only training needs nothing after the deepest hooked module. Not under ZeRO-3: its
        # parameter gathering follows module hooks that an interrupted forward would leave unbalanced.
        self.early_exit = (
            getattr(soo_args, "soo_early_exit", True) and soo_args.lm_weight == 0 and zero_stage(self.args) != 3
        )
        # [sum, sum of squares, count] per metric since the last log: exact means over pairs and
        # sequences, and the spread for a 95% interval, all summable across processes.
        self._metric_stats = {mode: defaultdict(lambda: torch.zeros(3, dtype=torch.float64)) for mode in ("train", "eval")}
        self._eval_prefix = "eval"
        self._evaluating = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.capture.reset()
        # Not `model.training`: a DeepSpeed engine still reports training=True inside evaluate().
        mode = "eval" if self._evaluating else "train"
        # Evaluation reports the LM loss too, so it always runs the whole model.
        self.capture.stop_after_capture = self.early_exit and mode == "train"
        try:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        except ForwardStopped:
            outputs = None
        finally:
            self.capture.stop_after_capture = False

        layer_activations = self.capture.stacked()
        token_mode = self.soo_args.soo_token_mode
        soo_per_pair = torch.stack([soo_distance_per_pair(acts, inputs, token_mode) for acts in layer_activations]).mean(0)
        if mode == "train" and torch.is_grad_enabled() and not soo_per_pair.requires_grad:
            raise RuntimeError(
                "The captured activations carry no gradient, so the SOO term cannot train anything. "
                "With --activation_checkpointing use non-reentrant checkpointing "
                "(--activation_checkpointing_kwargs '{\"use_reentrant\": false}', the default)."
            )
        soo = soo_per_pair.mean()
        loss = self.soo_args.soo_weight * soo
        self._record(mode, "soo_loss", soo_per_pair)
        with torch.no_grad():  # diagnostic: does SOO fall because the hooked output stops varying at all?
            spread = torch.stack([activation_spread_per_pair(acts, inputs, token_mode) for acts in layer_activations])
            self._record(mode, "soo_act_spread", spread.mean(0))

        lm_per_sequence = None
        if self.soo_args.lm_weight > 0 or mode == "eval":
            lm_per_sequence = lm_loss_per_sequence(outputs.logits, inputs["labels"])
            if self.soo_args.lm_weight > 0:
                loss = loss + self.soo_args.lm_weight * lm_per_sequence.mean()
            self._record(mode, "lm_loss", lm_per_sequence)

        if not torch.isfinite(loss):
            lm_text = "not computed" if lm_per_sequence is None else f"{lm_per_sequence.mean().item():.4g}"
            raise NonFiniteLossError(
                f"Non-finite loss at step {self.state.global_step + 1} ({mode}): soo_loss={soo.item():.4g}, "
                f"lm_loss={lm_text}. Under fp16 (most often with Gemma-2/3) activations overflow: "
                "use --bf16 where the GPU has it, or fp32; otherwise lower --learning_rate."
            )
        return (loss, outputs) if return_outputs else loss

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        # Every rank writes its own shards (ZeRO): mark the checkpoint complete only once all are done,
        # so that a job killed mid-save resumes from the previous checkpoint instead of a torn one.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            mark_checkpoint_complete(os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"))

    def _record(self, mode: str, name: str, values: torch.Tensor) -> None:
        values = values.detach().double()
        stats = self._metric_stats[mode][name]
        stats += torch.stack([values.sum(), values.pow(2).sum(), torch.tensor(values.numel(), dtype=torch.float64)]).cpu()

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._eval_prefix = metric_key_prefix
        self._evaluating = True
        try:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._evaluating = False

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if "loss" in logs else "eval"
        prefix = "" if mode == "train" else f"{self._eval_prefix}_"
        stats = self._metric_stats[mode]
        names = sorted(stats)
        if names:
            totals = torch.stack([stats[name] for name in names])
            if self.accelerator.num_processes > 1:
                totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
            for name, (total, total_sq, count) in zip(names, totals.tolist()):
                mean = total / count
                logs[f"{prefix}{name}"] = mean
                if mode == "eval":
                    logs[f"{prefix}{name}_n"] = int(count)
                    variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
                    logs[f"{prefix}{name}_ci95"] = 1.96 * math.sqrt(variance / count)
        stats.clear()
        super().log(logs, start_time)
