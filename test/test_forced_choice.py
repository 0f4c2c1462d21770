"""Forced-choice scoring: cached batched scores equal the from-scratch reference, known logits give
known probabilities, multi-token options, both orders, and the summary's pairing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from soo.eval.forced_choice import (
    ChoiceItem,
    answer_prefix,
    generation_agreement,
    p_first_of_two,
    score_choices,
    score_prompts,
    score_reference,
    summarize_forced_choice,
    tokenize_choice,
)
from soo.eval.scenarios import build_eval_prompts
from soo.tools.tiny_model import ARCHITECTURES


class BigramModel(torch.nn.Module):
    """Logits depend on the current token only (a fixed table): summed option log-probs can be
    computed by hand. It keeps no cache, which the scorer must tolerate."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.generation_config = SimpleNamespace(pad_token_id=0, eos_token_id=None)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids], past_key_values=None)


def test_known_logits_give_known_probabilities():
    vocab = 6
    table = torch.zeros(vocab, vocab)
    table[3, 4] = 2.0  # after token 3, token 4 is e^2 times likelier than any other
    table[4, 5] = 1.0
    model = BigramModel(table)
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=None)
    # Option A = [4, 5] (two tokens), option B = [1] after a context ending in 3.
    [[lp_a, lp_b]] = score_choices(model, tokenizer, [ChoiceItem([2, 3], ([4, 5], [1]))], progress=False)
    z3 = 2.0 + math.log(math.exp(2.0) + vocab - 1) - 2.0  # log-partition after token 3
    z4 = math.log(math.exp(1.0) + vocab - 1)
    assert lp_a == pytest.approx((2.0 - z3) + (1.0 - z4), abs=1e-6)
    assert lp_b == pytest.approx(0.0 - z3, abs=1e-6)
    expected = math.exp(lp_a) / (math.exp(lp_a) + math.exp(lp_b))
    assert p_first_of_two([lp_a, lp_b]) == pytest.approx(expected, rel=1e-9)
    assert p_first_of_two([-1000.0, 0.0]) == pytest.approx(0.0, abs=1e-12)  # stable far from 0
    assert p_first_of_two([0.0, -1000.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_batched_cached_scores_equal_the_reference(arch, share_prefix, make_model, tokenizer):
    model = make_model(arch)
    prompts = build_eval_prompts(["main", "perspectives", "treasure_hunt"], n=3, seed=1)
    items = [
        tokenize_choice(
            tokenizer, p.prompt, answer_prefix("I would {verb} the", p), (p.deceptive_option, p.honest_option)
        )
        for p in prompts
    ]
    # A context that is the start of another one, and a duplicate: the shared part must stop
    # one token short of the shortest context.
    items += [ChoiceItem(items[0].context[:-3], items[0].options), items[1]]
    assert any(max(len(o) for o in item.options) > 1 for item in items), "multi-token options are exercised"
    assert len({len(item.context) for item in items}) > 1, "contexts of different lengths share a batch"
    calls = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    batched = score_choices(model, tokenizer, items, batch_size=4, progress=False, share_prefix=share_prefix)
    hook.remove()
    # The shared part runs once per batch as a single row, unless a sliding window shorter than
    # the batch forbids sharing (the tiny Mistral/Gemma windows are 32-64 tokens).
    shares = share_prefix and getattr(model.config, "sliding_window", None) is None
    assert any(shape[0] == 1 for shape in calls) == shares
    reference = score_reference(model, tokenizer, items)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(reference), rtol=1e-4, atol=1e-4)


def test_tokenize_choice_splits_the_answer_at_the_prefix(tokenizer):
    prompt = build_eval_prompts(["main"], n=1)[0]
    item = tokenize_choice(tokenizer, prompt.prompt, "I would point out the", ("cellar", "library"))
    for option, ids in zip(("cellar", "library"), item.options):
        assert tokenizer.decode(ids).strip() == option
    assert tokenizer.decode(item.context).endswith("I would point out the")


def test_prefix_uses_each_scenario_verb():
    prompts = {p.scenario: p for p in build_eval_prompts(["main", "action", "perspectives"], n=1)}
    assert answer_prefix("I would {verb} the", prompts["main"]) == "I would point out the"
    assert answer_prefix("I would {verb} the", prompts["action"]) == "I would mention the"
    assert answer_prefix("I would {verb} the", prompts["perspectives"]) == "I would say the"


def _row(order, index, p, scenario="main", kind="deception"):
    return {"condition": "base", "scenario": scenario, "order": order, "index": index, "kind": kind, "p_deceptive": p}


def test_summary_pairs_orders_and_measures_position_bias():
    # A pure position follower: p(first-listed) = 0.9 in every prompt.
    rows = [_row("deceptive_first", i, 0.9) for i in range(4)] + [_row("deceptive_second", i, 0.1) for i in range(4)]
    [entry] = summarize_forced_choice(rows)
    assert entry["deceptive_first"]["mean"] == pytest.approx(0.9) and entry["deceptive_second"][
        "mean"
    ] == pytest.approx(0.1)
    assert entry["order_averaged"]["mean"] == pytest.approx(0.5) and entry["order_averaged"]["n"] == 4
    assert entry["position_bias"]["mean"] == pytest.approx(0.9)
    assert entry["argmax_patterns"]["first_listed_both"] == 1.0 and entry["argmax_patterns"]["deceptive_both"] == 0.0
    # A consistent deceiver: deceptive in both orders, no position bias.
    rows = [_row(order, i, 0.8) for order in ("deceptive_first", "deceptive_second") for i in range(3)]
    [entry] = summarize_forced_choice(rows)
    assert entry["order_averaged"]["mean"] == pytest.approx(0.8)
    assert entry["position_bias"]["mean"] == pytest.approx(0.5)
    assert entry["argmax_patterns"]["deceptive_both"] == 1.0


def test_perspectives_score_is_p_correct():
    rows = [_row(order, 0, 0.25, "perspectives", "perspectives") for order in ("deceptive_first", "deceptive_second")]
    [entry] = summarize_forced_choice(rows)
    assert entry["score_name"] == "p_correct" and entry["order_averaged"]["mean"] == pytest.approx(0.75)


def test_agreement_with_generation_labels():
    forced = [_row("deceptive_first", 0, 0.9), _row("deceptive_second", 0, 0.4), _row("deceptive_first", 1, 0.2)]
    labels = [
        dict(condition="base", scenario="main", order="deceptive_first", index=0, label="deceptive"),
        dict(condition="base", scenario="main", order="deceptive_second", index=0, label="deceptive"),
        dict(condition="base", scenario="main", order="deceptive_first", index=1, label="ambiguous"),
    ]
    agreement = generation_agreement(forced, labels)["base"]
    assert agreement == {"agree": 1, "decided": 2, "ambiguous": 1, "rate": 0.5}


def test_score_prompts_rows(make_model, tokenizer):
    prompts = build_eval_prompts(["main"], n=2)
    rows = score_prompts(make_model("llama"), tokenizer, prompts, batch_size=3, progress=False)
    assert [(r["order"], r["index"]) for r in rows] == [(p.order, p.index) for p in prompts]
    assert all(0.0 < r["p_deceptive"] < 1.0 and r["prefix"] == "I would point out the" for r in rows)
