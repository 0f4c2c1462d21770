"""Offline capability-retention proxies: KL to the base model, perplexity, MT-Bench-style export.

The paper judged capability with MT-Bench and a GPT-4 judge, which needs a network. Offline we
measure how far the tuned model moved from the base on text unrelated to SOO:

  * next-token KL(base || tuned), averaged over the positions of neutral chat prompts
    (`resources/neutral_prompts.txt`), teacher-forced: 0 means no change at all;
  * perplexity of a held-out generic text (`resources/heldout_text.txt`, written for this
    project, so no model has trained on it);
  * optionally, greedy answers to our own MT-Bench-style two-turn questions
    (`resources/mt_bench_style_questions.jsonl`), exported as JSONL for an external judge.

Base and tuned are one peft model: the base is the same weights with the adapter disabled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from soo.core.io import write_jsonl_atomic
from soo.core.modeling import adapter_disabled, model_device
from soo.core.prompts import format_prompt, right_padded
from soo.core.stats import mean_ci95

RESOURCES = Path(__file__).resolve().parent / "resources"


def load_neutral_prompts() -> list[str]:
    lines = (RESOURCES / "neutral_prompts.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def load_heldout_text() -> str:
    return (RESOURCES / "heldout_text.txt").read_text(encoding="utf-8")


def load_mt_bench_style_questions() -> list[dict]:
    with open(RESOURCES / "mt_bench_style_questions.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@torch.inference_mode()
def kl_to_base(
    model, tokenizer, prompts: list[str], batch_size: int = 8, use_chat_template: bool = True, progress: bool = True
) -> dict:
    """Mean next-token KL(base || tuned) per prompt over its real positions; mean ± 95% CI over prompts."""
    model.eval()
    per_prompt = []
    rows = [format_prompt(tokenizer, prompt, use_chat_template) for prompt in prompts]
    for start in tqdm(range(0, len(rows), batch_size), desc="KL to base", disable=not progress):
        ids, mask = right_padded(rows[start : start + batch_size], tokenizer.pad_token_id)
        ids, mask = ids.to(model_device(model)), mask.to(model_device(model))
        tuned = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        with adapter_disabled(model):
            base = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        kl = (base.exp() * (base - tuned)).sum(dim=-1)  # [B, T]
        per_prompt += ((kl * mask).sum(dim=1) / mask.sum(dim=1)).tolist()
    mean, ci95 = mean_ci95(per_prompt)
    return {"kl_mean": mean, "kl_ci95": ci95, "n_prompts": len(per_prompt)}


@torch.inference_mode()
def perplexity(model, tokenizer, text: str, window: int = 256) -> dict:
    """Perplexity of `text` in non-overlapping windows of `window` tokens (each scored from its start)."""
    model.eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(ids), window):
        chunk = torch.tensor([bos + ids[start : start + window]], device=model_device(model))
        if chunk.shape[1] < 2:
            continue
        logits = model(input_ids=chunk).logits.float()
        nll = F.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
        total_nll += nll.item()
        total_tokens += chunk.shape[1] - 1
    return {"perplexity": math.exp(total_nll / total_tokens), "tokens": total_tokens}


def base_and_tuned_perplexity(model, tokenizer, text: str | None = None) -> dict:
    text = load_heldout_text() if text is None else text
    tuned = perplexity(model, tokenizer, text)
    with adapter_disabled(model):
        base = perplexity(model, tokenizer, text)
    return {"base": base["perplexity"], "tuned": tuned["perplexity"], "tokens": tuned["tokens"]}


@torch.inference_mode()
def export_mt_bench_style_answers(
    model, tokenizer, out_path: Path, model_id: str, max_new_tokens: int = 256, progress: bool = True
) -> Path:
    """Greedy two-turn answers, one JSON line per question, in the answer-file layout MT-Bench judges read:
    {"question_id", "model_id", "choices": [{"index": 0, "turns": [answer1, answer2]}]}. No network call."""
    model.eval()
    lines = []
    for question in tqdm(
        load_mt_bench_style_questions(), desc=f"MT-Bench-style answers ({model_id})", disable=not progress
    ):
        messages, answers = [], []
        for turn in question["turns"]:
            messages.append({"role": "user", "content": turn})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model_device(model))
            output = model.generate(
                **ids, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id
            )
            answer = tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            messages.append({"role": "assistant", "content": answer})
            answers.append(answer)
        lines.append(
            {
                "question_id": question["question_id"],
                "category": question["category"],
                "model_id": model_id,
                "choices": [{"index": 0, "turns": answers}],
            }
        )
    return write_jsonl_atomic(out_path, lines)
