"""Tests of the self/other pair generator (soo.data.templates, soo.data.pair_generation, soo.data.pair_io,
generate_data.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

from soo.core.io import write_jsonl_atomic  # noqa: E402
from soo.data.pair_generation import (  # noqa: E402
    FAMILIES,
    family_capacity,
    generate_pairs,
    reference_difference_problems,
    summarize,
)
from soo.data.pair_io import REQUIRED_KEYS, PairDataError, read_pairs_jsonl  # noqa: E402
from soo.data.templates import (  # noqa: E402
    BURGLAR_CONTEXTS,
    BURGLAR_TEMPLATES,
    BURGLAR_VOCABULARY,
    GENERAL_ADJECTIVES,
    GENERAL_OTHER_REFERENT,
    GENERAL_TEMPLATES,
    GENERAL_TOPICS,
    PERSON_SLOTS,
    ROOMS,
    SPLITS,
    TEST_NAMES,
    VERB_AGREEMENT,
    other_perspective,
    template_slots,
)

CLI = REPO_ROOT / "generate_data.py"

# Large enough that every template, most names and items and every context sentence occur.
N_PER_SPLIT = 3000


@pytest.fixture(scope="module")
def generated() -> dict[str, list[dict]]:
    return {split: generate_pairs(N_PER_SPLIT, seed=123, split=split) for split in SPLITS}


def run_cli(*args: str, cwd: Path, hash_seed: str = "0") -> subprocess.CompletedProcess:
    # A different PYTHONHASHSEED per run exposes output that depends on set or hash order.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def whole_word_pattern(terms) -> re.Pattern:
    # Longest first so that "gold bar" is not shadowed by a shorter alternative.
    alternatives = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def prompts_of(records, family=None):
    for record in records:
        if family is None or record["family"] == family:
            yield record["self_prompt"]
            yield record["other_prompt"]


# --- determinism and the CLI --------------------------------------------------------------


def test_cli_same_arguments_give_byte_identical_files_and_other_seed_differs(tmp_path):
    first, second, reseeded = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for out, seed, hash_seed in [(first, "7", "1"), (second, "7", "2"), (reseeded, "8", "1")]:
        result = run_cli("--n", "200", "--seed", seed, "--output_file", str(out), cwd=tmp_path, hash_seed=hash_seed)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != reseeded.read_bytes()
    assert len(first.read_bytes().split(b"\n")) == 201  # 200 lines, each ending in "\n"
    assert b"\r" not in first.read_bytes()


def test_generate_pairs_is_deterministic_in_process():
    assert generate_pairs(300, seed=5) == generate_pairs(300, seed=5)
    assert generate_pairs(300, seed=5) != generate_pairs(300, seed=6)
    assert generate_pairs(300, seed=5, split="train") != generate_pairs(300, seed=5, split="test")


def test_cli_prints_summary_with_each_family_and_writes_default_test_path(tmp_path):
    result = run_cli("--split", "test", "--n", "40", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "data" / "soo_test.jsonl"
    assert out.is_file()
    for family in FAMILIES:
        assert re.search(rf"^{family}\s+\(all\)\s+20$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^total\s+40$", result.stdout, re.MULTILINE)
    assert str(Path("data") / "soo_test.jsonl") in result.stdout
    records = read_pairs_jsonl(out)
    assert len(records) == 40 and {record["split"] for record in records} == {"test"}


def test_cli_default_train_path(tmp_path):
    result = run_cli("--n", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [record["split"] for record in read_pairs_jsonl(tmp_path / "data" / "soo_train.jsonl")] == ["train"] * 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "at least 1"),
        (["--n", "-3"], "at least 1"),
        (["--n", "ten"], "integer"),
        (["--families", "burglar", "pirates"], "invalid choice"),
        (["--split", "validation"], "invalid choice"),
        (["--families", "general", "general"], "repeat"),
        (["--n", "100000", "--families", "general"], "unique pairs"),
    ],
)
def test_cli_bad_arguments_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "sub" / "pairs.jsonl"
    result = run_cli(*args, "--output_file", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists() and not out.parent.exists()
    assert list(tmp_path.iterdir()) == []


# --- contents of the generated pairs -----------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_vocabulary_sizes_meet_minimums(split):
    vocab = BURGLAR_VOCABULARY[split]
    assert len(vocab.names) >= 30
    assert len(vocab.expensive_items) >= 50
    assert len(vocab.cheap_items) >= 20
    assert len(vocab.rooms) >= 10
    assert len(vocab.contexts) >= 10
    assert len(BURGLAR_TEMPLATES) >= 8  # the paper's 3 plus at least 5 more
    assert len(GENERAL_TOPICS[split]) >= 8
    for pool in (vocab.names, vocab.expensive_items, vocab.cheap_items, vocab.rooms, vocab.contexts):
        assert len(set(pool)) == len(pool), "duplicate vocabulary entry"


def test_evaluation_names_are_held_out():
    assert {"Bob", "Oliver"} <= set(TEST_NAMES)
    assert not {"Bob", "Oliver"} & set(BURGLAR_VOCABULARY["train"].names)


def test_vocabulary_lists_are_disjoint_between_splits():
    train, test = BURGLAR_VOCABULARY["train"], BURGLAR_VOCABULARY["test"]
    train_terms = {t.lower() for t in train.names + train.expensive_items + train.cheap_items}
    test_terms = {t.lower() for t in test.names + test.expensive_items + test.cheap_items}
    assert not train_terms & test_terms
    assert not set(GENERAL_TOPICS["train"]) & set(GENERAL_TOPICS["test"])


def test_names_are_single_capitalized_words_that_collide_with_nothing():
    names = BURGLAR_VOCABULARY["train"].names + BURGLAR_VOCABULARY["test"].names
    for name in names:
        assert re.fullmatch(r"[A-Z][a-z]+", name), name
    other_text = " | ".join(
        [t.text for t in BURGLAR_TEMPLATES + GENERAL_TEMPLATES]
        + list(BURGLAR_CONTEXTS)
        + list(ROOMS)
        + list(GENERAL_ADJECTIVES)
        + [topic for split in SPLITS for topic in GENERAL_TOPICS[split]]
        + [item for split in SPLITS for v in [BURGLAR_VOCABULARY[split]] for item in v.expensive_items + v.cheap_items]
    )
    assert whole_word_pattern(names).findall(other_text) == []


@pytest.mark.parametrize("split, other_split", [("train", "test"), ("test", "train")])
def test_no_name_or_item_of_one_split_appears_in_the_other_splits_prompts(generated, split, other_split):
    vocab = BURGLAR_VOCABULARY[other_split]
    foreign = whole_word_pattern(vocab.names + vocab.expensive_items + vocab.cheap_items)
    leaks = sorted({match for prompt in prompts_of(generated[split]) for match in foreign.findall(prompt)})
    assert leaks == []
    # The same search finds the split's own vocabulary, so it is able to find leaks.
    own = BURGLAR_VOCABULARY[split]
    own_pattern = whole_word_pattern(own.names + own.expensive_items + own.cheap_items)
    assert sum(bool(own_pattern.search(p)) for p in prompts_of(generated[split], "burglar")) > 0


@pytest.mark.parametrize("split, other_split", [("train", "test"), ("test", "train")])
def test_general_topics_are_disjoint_between_splits(generated, split, other_split):
    foreign = whole_word_pattern(GENERAL_TOPICS[other_split])
    assert [p for p in prompts_of(generated[split], "general") if foreign.search(p)] == []
    own = whole_word_pattern(GENERAL_TOPICS[split])
    assert all(own.search(p) for p in prompts_of(generated[split], "general"))


@pytest.mark.parametrize("split", SPLITS)
def test_record_fields_come_from_the_splits_vocabulary(generated, split):
    vocab = BURGLAR_VOCABULARY[split]
    for record in generated[split]:
        assert record["split"] == split
        if record["family"] == "burglar":
            assert record["agent"] in vocab.names and record["item"] in vocab.expensive_items
            assert record["item"] in record["self_prompt"] and record["item"] in record["other_prompt"]
        else:
            assert record["agent"] == GENERAL_OTHER_REFERENT and record["topic"] in GENERAL_TOPICS[split]


def test_records_have_required_keys_in_a_fixed_order(generated):
    common = ["id", "family", "template", "split", "self_prompt", "other_prompt", "agent"]
    expected_keys = {"burglar": common + ["item"], "general": common + ["topic"]}
    for records in generated.values():
        for record in records:
            assert list(record) == expected_keys[record["family"]]
            for key in REQUIRED_KEYS:
                assert isinstance(record[key], str) and record[key].strip()


@pytest.mark.parametrize("split", SPLITS)
def test_ids_are_unique_and_sequential(generated, split):
    assert [r["id"] for r in generated[split]] == [f"{split}-{i:06d}" for i in range(N_PER_SPLIT)]


@pytest.mark.parametrize(
    "n, families",
    [(1, FAMILIES), (2, FAMILIES), (7, FAMILIES), (1001, FAMILIES), (50, ("burglar",)), (9, ("general",))],
)
def test_requested_n_unique_pairs_and_even_family_shares(n, families):
    records = generate_pairs(n, seed=3, families=families)
    assert len(records) == n
    assert len({(r["self_prompt"], r["other_prompt"]) for r in records}) == n
    counts = [sum(r["family"] == family for r in records) for family in families]
    assert {r["family"] for r in records} <= set(families)
    assert max(counts) - min(counts) <= 1
    assert counts[0] == -(-n // len(families))  # the first family takes the remainder


def test_family_order_decides_who_gets_the_remainder_and_families_interleave():
    records = generate_pairs(11, seed=0, families=("general", "burglar"))
    assert Counter(r["family"] for r in records) == {"general": 6, "burglar": 5}
    assert [r["family"] for r in records[:4]] == ["general", "burglar", "general", "burglar"]


@pytest.mark.parametrize("split", SPLITS)
def test_every_template_occurs_and_burglar_pairs_are_half_with_context(generated, split):
    templates = Counter(r["template"] for r in generated[split])
    assert set(templates) == {t.id for t in BURGLAR_TEMPLATES + GENERAL_TEMPLATES}
    burglar = [r for r in generated[split] if r["family"] == "burglar"]
    # Templates start with the subject; a context sentence never starts with "You".
    plain = sum(r["self_prompt"].startswith(("You ", "Your ")) for r in burglar)
    assert abs(plain - (len(burglar) - plain)) <= 1
    used_contexts = {c for c in BURGLAR_CONTEXTS for r in burglar if _context_matches(c, r["self_prompt"])}
    assert used_contexts == set(BURGLAR_CONTEXTS)


def _context_matches(context: str, prompt: str) -> bool:
    pattern = re.escape(context).replace(re.escape("{room}"), ".+?").replace(re.escape("{cheap_item}"), ".+?")
    return re.match(pattern + " ", prompt) is not None


def test_request_beyond_the_unique_pairs_raises_with_the_count():
    capacity = family_capacity("general", "train")
    everything = generate_pairs(capacity, seed=0, families=("general",))
    assert len({(r["self_prompt"], r["other_prompt"]) for r in everything}) == capacity
    assert capacity == len(GENERAL_TEMPLATES) * len(GENERAL_ADJECTIVES) * len(GENERAL_TOPICS["train"])
    with pytest.raises(ValueError, match=rf"only {capacity} unique pairs"):
        generate_pairs(capacity + 1, seed=0, families=("general",))
    # Both families: burglar (first) takes the odd pair, so general is full at 2 * capacity + 1.
    assert len(generate_pairs(2 * capacity + 1, seed=0)) == 2 * capacity + 1
    with pytest.raises(ValueError, match=rf"'general' family has only {capacity} .* at most n={2 * capacity + 1}"):
        generate_pairs(2 * capacity + 2, seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0, seed=0), "positive"),
        (dict(n=True, seed=0), "positive"),
        (dict(n=5, seed=0, split="dev"), "unknown split"),
        (dict(n=5, seed=0, families=("burglar", "cooking")), "unknown family"),
        (dict(n=5, seed=0, families=()), "empty"),
        (dict(n=5, seed=0, families=("burglar", "burglar")), "repeat"),
        (dict(n=5, seed="0"), "seed"),
    ],
)
def test_generate_pairs_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_pairs(**kwargs)


# --- the invariant: self and other differ only in who is referenced -----------------------


@pytest.mark.parametrize("split", SPLITS)
def test_every_generated_pair_differs_only_in_the_reference(generated, split):
    failures = {}
    for record in generated[split]:
        problems = reference_difference_problems(record["self_prompt"], record["other_prompt"], record["agent"])
        if problems:
            failures[record["id"]] = problems
    assert failures == {}


def test_every_general_pair_of_every_split_differs_only_in_the_reference():
    for split in SPLITS:
        for record in generate_pairs(family_capacity("general", split), seed=0, split=split, families=("general",)):
            assert reference_difference_problems(record["self_prompt"], record["other_prompt"], record["agent"]) == []
            assert "yourself" in record["self_prompt"] and "the user" in record["other_prompt"]


def test_every_burglar_template_with_every_name_differs_only_in_the_reference():
    for split in SPLITS:
        vocab = BURGLAR_VOCABULARY[split]
        for template in BURGLAR_TEMPLATES:
            for name in vocab.names:
                self_prompt, other_prompt = template.render_pair(other_perspective(name), item=vocab.expensive_items[0])
                assert reference_difference_problems(self_prompt, other_prompt, name) == [], template.id
                assert name in other_prompt and name not in self_prompt


def test_the_papers_three_phrasings_are_reproduced_word_for_word():
    # From the official code (soo-reference.md section 2).
    by_id = {t.id: t for t in BURGLAR_TEMPLATES}
    bob = other_perspective("Bob")
    assert by_id["burglar_goal"].render_pair(bob, item="vase") == (
        "You have the goal of stealing the vase. If you needed to suggest one room to yourself",
        "Bob has the goal of stealing the vase. If you needed to suggest one room to Bob",
    )
    assert by_id["burglar_intend"].render_pair(bob, item="vase") == (
        "You intend to steal the vase. If you were required to recommend one room to yourself",
        "Bob intends to steal the vase. If you were required to recommend one room to Bob",
    )
    assert by_id["burglar_planning"].render_pair(bob, item="vase") == (
        "You are planning to steal the vase. If you would have to point out one room to yourself",
        "Bob is planning to steal the vase. If you would have to point out one room to Bob",
    )
    general_will = {t.id: t for t in GENERAL_TEMPLATES}["general_will"]
    assert general_will.render_pair(other_perspective("the user"), adjective="truthful", topic="values") == (
        "Will you be truthful with yourself about your values?",
        "Will you be truthful with the user about your values?",
    )


def test_templates_use_only_known_slots_and_each_references_an_agent():
    verb_slots = set(VERB_AGREEMENT)
    for template in BURGLAR_TEMPLATES:
        slots = set(template_slots(template.text))
        assert slots <= set(PERSON_SLOTS) | verb_slots | {"item"}, template.id
        assert "item" in slots and slots & set(PERSON_SLOTS), template.id
    for template in GENERAL_TEMPLATES:
        assert set(template_slots(template.text)) == {"adjective", "reflexive", "topic"}, template.id
    for context in BURGLAR_CONTEXTS:
        assert set(template_slots(context)) <= {"room", "cheap_item"}, context
    ids = [t.id for t in BURGLAR_TEMPLATES + GENERAL_TEMPLATES]
    assert len(set(ids)) == len(ids)
    assert all(t.id.startswith(t.family + "_") for t in BURGLAR_TEMPLATES + GENERAL_TEMPLATES)


BOB_SELF = "You intend to steal the vase. If you were required to recommend one room to yourself"
BOB_OTHER = "Bob intends to steal the vase. If you were required to recommend one room to Bob"


@pytest.mark.parametrize(
    "self_prompt, other_prompt, referent, expected",
    [
        (BOB_SELF, BOB_OTHER.replace("vase", "ring"), "Bob", "more than the reference"),
        (BOB_SELF, BOB_OTHER.replace("one room", "one big room"), "Bob", "more than the reference"),
        (BOB_SELF, BOB_OTHER.replace("intends", "intend"), "Bob", "verb does not agree"),
        (BOB_SELF.replace("intend", "intends"), BOB_OTHER, "Bob", "verb does not agree"),
        (BOB_SELF, BOB_OTHER.replace("to Bob", "to Alice"), "Bob", "more than the reference"),
        (BOB_SELF.replace("yourself", "Bob"), BOB_OTHER, "Bob", "self prompt mentions 'Bob'"),
        (BOB_SELF, BOB_SELF, "Bob", "identical"),
        (BOB_SELF, BOB_OTHER, "Alice", "does not mention 'Alice'"),
        (BOB_SELF, BOB_OTHER.replace("to Bob", "to"), "Bob", "one side only"),
        ("The attic is dark. " + BOB_SELF, "The cellar is dark. " + BOB_OTHER, "Bob", "more than the reference"),
        (
            "Will you be honest with yourself about your values?",
            "Will you be honest with the user about your goals?",
            "the user",
            "more than the reference",
        ),
    ],
)
def test_reference_check_rejects_pairs_that_differ_in_more(self_prompt, other_prompt, referent, expected):
    problems = reference_difference_problems(self_prompt, other_prompt, referent)
    assert any(expected in problem for problem in problems), problems


def test_reference_check_accepts_possessives_and_multiword_referents():
    assert reference_difference_problems(BOB_SELF, BOB_OTHER, "Bob") == []
    are_self, are_other = BOB_SELF.replace("You intend", "You are"), BOB_OTHER.replace("Bob intends", "Bob is")
    assert reference_difference_problems(are_self, are_other, "Bob") == []
    assert (
        reference_difference_problems("Your plan is to hide. Tell yourself", "Bob's plan is to hide. Tell Bob", "Bob")
        == []
    )
    assert (
        reference_difference_problems(
            "Ask yourself about your goals.", "Ask the user about the user's goals.", "the user"
        )
        == []
    )


# --- JSONL I/O ----------------------------------------------------------------------------


def test_write_then_read_round_trips_and_fills_missing_ids(tmp_path):
    records = generate_pairs(20, seed=1)
    path = write_jsonl_atomic(tmp_path / "new" / "dir" / "pairs.jsonl", records)
    assert path.is_file()
    assert read_pairs_jsonl(path) == records
    assert path.read_text(encoding="utf-8").count("\n") == 20

    bare = tmp_path / "bare.jsonl"
    bare.write_text('\n{"self_prompt": "a", "other_prompt": "b", "extra": 1}\n\n', encoding="utf-8")
    assert read_pairs_jsonl(bare) == [{"id": "line-2", "self_prompt": "a", "other_prompt": "b", "extra": 1}]


def test_write_keeps_non_ascii_text_readable(tmp_path):
    path = write_jsonl_atomic(tmp_path / "u.jsonl", [{"self_prompt": "Zoë", "other_prompt": "Zoë's"}])
    assert "Zoë" in path.read_text(encoding="utf-8")
    assert read_pairs_jsonl(path)[0]["other_prompt"] == "Zoë's"


def test_failed_write_leaves_existing_file_untouched_and_no_temp_file(tmp_path):
    target = tmp_path / "pairs.jsonl"
    target.write_bytes(b'{"self_prompt": "old", "other_prompt": "old"}\n')
    before = target.read_bytes()
    good = {"self_prompt": "a", "other_prompt": "b"}
    with pytest.raises(TypeError):
        write_jsonl_atomic(target, [good, good, {"self_prompt": object(), "other_prompt": "b"}, good])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_failed_write_of_a_new_file_creates_nothing(tmp_path):
    def records_then_crash():
        yield {"self_prompt": "a", "other_prompt": "b"}
        raise RuntimeError("generator failed midway")

    with pytest.raises(RuntimeError, match="midway"):
        write_jsonl_atomic(tmp_path / "pairs.jsonl", records_then_crash())
    assert list(tmp_path.iterdir()) == []


def write_lines(tmp_path: Path, *lines: str, name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD_LINE = '{"self_prompt": "You x", "other_prompt": "Bob x"}'


def test_read_reports_invalid_json_with_file_and_line(tmp_path):
    path = write_lines(tmp_path, GOOD_LINE, GOOD_LINE, '{"self_prompt": "You x", ')
    with pytest.raises(PairDataError) as error:
        read_pairs_jsonl(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message and "invalid JSON" in message
    assert "Expecting" in message  # the json module's own description of the problem


def test_read_reports_non_object_line(tmp_path):
    path = write_lines(tmp_path, GOOD_LINE, '["You x", "Bob x"]')
    with pytest.raises(PairDataError, match=r"line 2: expected a JSON object, got list") as error:
        read_pairs_jsonl(path)
    assert str(path) in str(error.value)


def test_read_reports_missing_keys_and_present_keys(tmp_path):
    path = write_lines(tmp_path, GOOD_LINE, "", '{"id": "p1", "self": "You x"}')
    with pytest.raises(PairDataError) as error:
        read_pairs_jsonl(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message
    assert "missing required key(s) self_prompt, other_prompt" in message
    assert "keys present: id, self" in message


@pytest.mark.parametrize("bad_value", ['""', '"   "', "null", "42", '["x"]'])
def test_read_reports_required_value_that_is_not_a_non_empty_string(tmp_path, bad_value):
    path = write_lines(tmp_path, f'{{"self_prompt": "You x", "other_prompt": {bad_value}}}')
    with pytest.raises(PairDataError) as error:
        read_pairs_jsonl(path)
    message = str(error.value)
    assert str(path) in message and "line 1" in message
    assert "'other_prompt' must be a non-empty string" in message


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_read_reports_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PairDataError, match="contains no pairs") as error:
        read_pairs_jsonl(path)
    assert str(path) in str(error.value)


def test_read_reports_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "pairs.jsonl"
    with pytest.raises(PairDataError, match="file not found") as error:
        read_pairs_jsonl(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_read_refuses_a_pair_whose_self_and_other_prompts_are_identical(tmp_path):
    # Its two rows give the same activations: the SOO term would be 0 whatever the model does.
    path = write_lines(tmp_path, GOOD_LINE, "", '{"id": "p3", "self_prompt": "You x", "other_prompt": "You x"}')
    with pytest.raises(PairDataError) as error:
        read_pairs_jsonl(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message and "identical" in message


def test_read_reports_invalid_utf8_with_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD_LINE.encode() + b'\n{"self_prompt": "Zo\xeb", "other_prompt": "x"}\n')
    with pytest.raises(PairDataError, match="line 2: not valid UTF-8"):
        read_pairs_jsonl(path)


# --- summary ------------------------------------------------------------------------------


def test_summarize_counts_per_family_and_template():
    records = (
        [{"family": "burglar", "template": "burglar_goal"}] * 3
        + [{"family": "burglar", "template": "burglar_plan"}]
        + [{"family": "general", "template": "general_will"}] * 2
        + [{"self_prompt": "a", "other_prompt": "b"}]  # e.g. read from a hand-written file
    )
    table = summarize(records)
    for pattern in [
        r"^burglar\s+burglar_goal\s+3$",
        r"^burglar\s+burglar_plan\s+1$",
        r"^burglar\s+\(all\)\s+4$",
        r"^general\s+general_will\s+2$",
        r"^general\s+\(all\)\s+2$",
        r"^\(none\)\s+\(none\)\s+1$",
        r"^total\s+7$",
    ]:
        assert re.search(pattern, table, re.MULTILINE), (pattern, table)


def test_summary_of_generated_pairs_matches_counts(generated):
    table = summarize(generated["train"])
    counts = Counter(r["template"] for r in generated["train"])
    for template, count in counts.items():
        assert re.search(rf"\s{template}\s+{count}$", table, re.MULTILINE), template
    assert re.search(rf"^total\s+{N_PER_SPLIT}$", table, re.MULTILINE)


def test_module_exports_match_the_documented_api():
    assert FAMILIES == ("burglar", "general")
    assert REQUIRED_KEYS == ("self_prompt", "other_prompt")
    assert issubclass(PairDataError, ValueError)
    assert generate_pairs.__defaults__ == ("train", FAMILIES)
    json.dumps(generate_pairs(4, seed=0))  # records are plain JSON


# --------------------------------------------------------------------------------------------
# Pairs through the datasets library (load_pairs, tokenize_pairs, generate_data.py --dataset_dir)


def test_load_pairs_from_a_file_keeps_records_ids_and_line_numbered_errors(tmp_path):
    from soo.data.pair_io import load_pairs

    records = generate_pairs(6, seed=0)
    lines = (
        [json.dumps(r) for r in records[:3]]
        + [""]
        + [json.dumps({k: v for k, v in r.items() if k != "id"}) for r in records[3:]]
    )
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    dataset = load_pairs(path)
    assert [row["self_prompt"] for row in dataset] == [r["self_prompt"] for r in records]
    assert dataset["id"] == [r["id"] for r in read_pairs_jsonl(path)]  # the missing ids: line-5, line-6, line-7
    assert dataset["id"][3:] == ["line-5", "line-6", "line-7"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(records[0]) + "\n" + json.dumps({"self_prompt": "a", "other_prompt": "a"}) + "\n")
    with pytest.raises(PairDataError, match=r"bad\.jsonl, line 2: 'self_prompt' and 'other_prompt' are identical"):
        load_pairs(bad)
    with pytest.raises(PairDataError, match=r"nope\.jsonl: file not found"):
        load_pairs(tmp_path / "nope.jsonl")


def test_generate_data_writes_a_folder_load_dataset_reads_with_both_splits(tmp_path):
    from datasets import load_dataset

    import generate_data
    from soo.data.pair_io import load_pairs

    folder = tmp_path / "soo_pairs"
    assert generate_data.main(["--n", "12", "--dataset_dir", str(folder)]) == 0
    assert generate_data.main(["--split", "test", "--n", "5", "--dataset_dir", str(folder)]) == 0
    loaded = load_dataset(str(folder))
    assert sorted(loaded) == ["test", "train"] and loaded["train"].num_rows == 12 and loaded["test"].num_rows == 5
    # One table: a key another family's records have is None here (datasets unifies the columns).
    assert {k: v for k, v in loaded["test"][0].items() if v is not None} == generate_pairs(5, seed=0, split="test")[0]
    assert load_pairs(folder, split="test")["id"] == [r["id"] for r in generate_pairs(5, seed=0, split="test")]
    # An edited split file is read again (not a stale cached copy), and its errors name file and line.
    (folder / "test.jsonl").write_text(json.dumps({"self_prompt": "x", "other_prompt": ""}) + "\n")
    with pytest.raises(PairDataError, match=r"test\.jsonl, line 1: 'other_prompt' must be a non-empty string"):
        load_pairs(folder, split="test")
    # A folder without SPLIT.jsonl goes to load_dataset; a bad row names source, split and row.
    other = tmp_path / "other"
    other.mkdir()
    (other / "pairs.jsonl").write_text(json.dumps({"self_prompt": "x", "other_prompt": ""}) + "\n")
    with pytest.raises(PairDataError, match=r"other \(split train\), row 0: 'other_prompt' must be a non-empty"):
        load_pairs(other)
    with pytest.raises(SystemExit) as exit_info:  # one destination only
        generate_data.main(["--dataset_dir", str(folder), "--output_file", str(tmp_path / "x.jsonl")])
    assert exit_info.value.code == 2


def test_a_hub_id_offline_is_one_clear_error(monkeypatch):
    from soo.data.pair_io import load_pairs

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(PairDataError, match=r"someone/soo-pairs \(split train\): cannot load pairs.*offline"):
        load_pairs("someone/soo-pairs")


def test_tokenize_pairs_matches_the_in_memory_dataset_and_is_cached(tmp_path, tokenizer):
    from soo.core.pair_batch import PromptTooLongError, SOOPairDataset, tokenize_pairs
    from soo.data.pair_io import load_pairs

    path = write_jsonl_atomic(tmp_path / "pairs.jsonl", generate_pairs(8, seed=1))
    first = tokenize_pairs(load_pairs(path), tokenizer)
    again = tokenize_pairs(load_pairs(path), tokenizer)
    assert first.column_names == ["id", "self_input_ids", "other_input_ids"]
    expected = SOOPairDataset(read_pairs_jsonl(path), tokenizer)
    assert [dict(row) for row in first] == [expected[i] for i in range(len(expected))]
    # The second run reads the first one's map cache (same data, tokenizer and arguments).
    assert first.cache_files and again.cache_files == first.cache_files
    assert Path(first.cache_files[0]["filename"]).is_file()
    with pytest.raises(PromptTooLongError, match="exceed --max_length 5 tokens"):
        tokenize_pairs(load_pairs(path), tokenizer, max_length=5)


def test_released_pairs_are_one_per_item_cycling_the_papers_three_phrasings():
    from soo.data.pair_generation import RELEASED_TEMPLATE_IDS, released_pairs
    from soo.data.templates import BURGLAR_VOCABULARY

    records = released_pairs("train", 48)
    assert len(records) == 48
    assert [r["item"] for r in records] == list(BURGLAR_VOCABULARY["train"].expensive_items[:48])
    assert [r["template"] for r in records[:6]] == list(RELEASED_TEMPLATE_IDS) * 2
    assert {r["agent"] for r in records} == {"Alice"}
    assert records[1]["self_prompt"] == (
        "You intend to steal the gold pocket watch. If you were required to recommend one room to yourself"
    )
    assert records[1]["other_prompt"] == (
        "Alice intends to steal the gold pocket watch. If you were required to recommend one room to Alice"
    )
    assert {r["agent"] for r in released_pairs("test")} == {"Bob"}  # the released data's own agent
    assert not {r["item"] for r in records} & set(BURGLAR_VOCABULARY["test"].expensive_items)
    with pytest.raises(ValueError, match="one pair per item"):
        released_pairs("train", 57)
