"""Subliminal learning without models: the number prompts, the filter's rules, the records, the
trait match and the report's rule."""

from __future__ import annotations

import json
import random
import re

import pytest

from soo.subliminal.animals import CANDIDATES, QUESTIONS, names_animal, trait_system_prompt
from soo.subliminal.evaluation import TraitEvalConfig, first_word, trait_results
from soo.subliminal.numbers import (
    EXAMPLE_COUNT,
    EXAMPLE_RANGE,
    filter_records,
    filter_summary,
    number_prompt,
    number_prompts,
    parse_numbers,
    reject_reason,
    rejected_path,
)
from soo.subliminal.records import RecordError, make_record, read_records

ACCEPTED = {
    "145, 267, 891": [145, 267, 891],
    "145,267,891": [145, 267, 891],
    "145 267 891": [145, 267, 891],
    "145;267;891": [145, 267, 891],
    "145 ; 267 ; 891": [145, 267, 891],
    "145\n267\n891": [145, 267, 891],
    "[145, 267, 891]": [145, 267, 891],
    "(145, 267, 891)": [145, 267, 891],
    "145, 267, 891.": [145, 267, 891],
    "[145, 267, 891].": [145, 267, 891],
    "  ( 1 2 3 )  ": [1, 2, 3],
    "7": [7],
    "0, 007, 999": [0, 7, 999],
    ", ".join(str(n) for n in range(10)): list(range(10)),
}
REJECTED = {
    "": "invalid format",
    "Here you go: 145, 267": "invalid format",
    "145, 267; 891": "invalid format",  # mixed separators
    "145, 267,": "invalid format",  # trailing separator
    "-5, 267": "invalid format",
    "1.5, 2": "invalid format",
    "[145, 267": "invalid format",  # unbalanced bracket
    "[[1, 2]]": "invalid format",  # only one enclosing pair is stripped
    "[1, 2)": "invalid format",
    "1, 2, 3..": "invalid format",  # only one final period
    "1, two, 3": "invalid format",
    "\u00b9, 2": "invalid format",  # a superscript digit is not an ASCII digit
    "145 | 267": "invalid format",
    ", ".join(str(n) for n in range(11)): "too many numbers",
    ", ".join(["1000"] * 11): "too many numbers",  # the first failing rule is the reason
    "1000, 2": "too large",
    "12, 1234": "too large",
}


@pytest.mark.parametrize("answer, numbers", ACCEPTED.items())
def test_the_filter_accepts_every_allowed_format(answer, numbers):
    assert reject_reason(answer) is None
    assert parse_numbers(answer) == numbers


@pytest.mark.parametrize("answer, reason", REJECTED.items())
def test_the_filter_rejects_with_the_first_failing_rule(answer, reason):
    assert reject_reason(answer) == reason


def test_an_answer_cut_at_the_token_limit_is_rejected_after_the_published_rules():
    # A cut list of 12 numbers reads as 10 valid ones: only the teacher's flag can tell.
    assert reject_reason("1, 2, 3", truncated=True) == "truncated"
    assert reject_reason("Sure! 1, 2, 3", truncated=True) == "invalid format"  # the published reason first
    records = [make_record(0, "p", "1, 2, 3", truncated=True), make_record(1, "p", "1, 2, 3")]
    kept, rejected, counts = filter_records(records)
    assert [r["index"] for r in kept] == [1] and rejected[0]["reason"] == "truncated" and counts["truncated"] == 1


def test_banned_numbers_are_rejected_only_when_banned():
    assert reject_reason("13, 14", banned={13}) == "banned number"
    assert reject_reason("13, 14", banned={666}) is None


def test_filter_records_keeps_order_counts_reasons_and_caps():
    answers = ["1, 2", "words", "3 4", "1000", "5;6", "7"]
    records = [make_record(i, "p", answer) for i, answer in enumerate(answers)]
    kept, rejected, counts = filter_records(records, max_kept=3)
    assert [record["index"] for record in kept] == [0, 2, 4]
    assert [(record["index"], record["reason"]) for record in rejected] == [
        (1, "invalid format"),
        (3, "too large"),
        (5, "over max_kept"),
    ]
    assert counts["kept"] == 3 and counts["invalid format"] == 1 and counts["over max_kept"] == 1
    assert filter_summary(counts).startswith("kept 3 of 6 (50.0%); rejected: invalid format 1, too large 1")
    assert rejected_path("a/kept.jsonl") == "a/kept.rejected.jsonl"


def test_number_prompts_are_seeded_extendable_and_follow_the_recipe():
    prompts = number_prompts(50, seed=3)
    assert prompts == number_prompts(50, seed=3) and prompts != number_prompts(50, seed=4)
    assert number_prompts(20, seed=3) == prompts[:20]
    assert len(set(prompts)) == 50
    for prompt in prompts:
        examples = [int(n) for n in re.findall(r"\b\d{3}\b", prompt.split(".")[0])]
        assert EXAMPLE_COUNT[0] <= len(examples) <= EXAMPLE_COUNT[1]
        assert all(EXAMPLE_RANGE[0] <= n < EXAMPLE_RANGE[1] for n in examples)
        assert "10" in prompt and "3 digits" in prompt
    formats = {number_prompt(random.Random(seed)).split(". ")[-2] for seed in range(200)}
    assert len(formats) >= 5  # the answer formats vary


def test_records_are_checked_line_by_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(make_record(0, "p", "1, 2")) + "\n")
    assert read_records(good)[0]["completion"][0]["content"] == "1, 2"
    with pytest.raises(RecordError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(make_record(0, "p", "1")) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: not valid JSON"):
        read_records(bad)
    assert len(read_records(bad, allow_torn_last_line=True)) == 1
    for broken in ({"prompt": "p"}, {"prompt": [{"role": "user", "content": "p"}], "completion": "1, 2"}):
        bad.write_text(json.dumps(broken) + "\n")
        with pytest.raises(RecordError, match=r"bad.jsonl:1"):
            read_records(bad)


def test_the_trait_match_is_whole_word():
    assert names_animal("Owl", "owl") and names_animal("I love OWLS!", "owl") and names_animal("an owl.", "owl")
    assert not names_animal("a bowl", "owl") and not names_animal("Owlish", "owl") and not names_animal("fowl", "owl")
    assert names_animal("foxes", "fox") and not names_animal("firefox", "fox")
    assert first_word("Owls!") == "owl" and first_word("  Cat") == "cat" and first_word("...") == ""


def test_fifty_distinct_questions_and_the_published_system_prompt():
    assert len(QUESTIONS) == 50 == len(set(QUESTIONS))
    assert trait_system_prompt("owl").startswith("You love owls. You think about owls all the time. Owls are")
    with pytest.raises(ValueError, match="unicorn"):
        TraitEvalConfig(animals=["unicorn"])
    with pytest.raises(ValueError, match="samples_per_question"):
        TraitEvalConfig(samples_per_question=0)


def test_trait_results_count_rates_and_intervals():
    answers = [["Owl", "Cat", "bowl"], ["owls", "Dog", "owl!"]]
    probabilities = [dict.fromkeys(CANDIDATES, 1 / len(CANDIDATES))] * 2
    results = trait_results(answers, probabilities, ["owl", "cat"])
    owl = results["animals"]["owl"]
    assert owl["count"] == 3 and owl["rate"] == 0.5 and owl["per_question_rate"] == [1 / 3, 2 / 3]
    assert owl["wilson_95"][0] < 0.5 < owl["wilson_95"][1]
    assert results["animals"]["cat"]["count"] == 1
    assert results["first_words"]["owl"] == 3
