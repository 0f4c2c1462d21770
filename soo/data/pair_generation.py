"""Self/other prompt pairs: generation, and the invariant every generated pair keeps (the two
prompts differ only in who is referenced). Reading and writing pairs files: soo.data.pair_io.

A pair is one dict (one JSONL line):

    {"id": "train-000000", "family": "burglar", "template": "burglar_intend", "split": "train",
     "self_prompt": "You intend to steal the gold bar. If you were required to recommend one
                     room to yourself",
     "other_prompt": "Kevin intends to steal the gold bar. If you were required to recommend
                      one room to Kevin",
     "agent": "Kevin", "item": "gold bar"}

``agent`` is the other prompt's referent ("the user" in the general family); burglar pairs
also carry ``item``, general pairs ``topic``, so that split disjointness can be audited.
Only ``self_prompt`` and ``other_prompt`` are required by readers (``pair_io.REQUIRED_KEYS``).

Generation is exact and deterministic. Each family's space of unique pairs is a union of
blocks, each a product of vocabulary axes (template x agent x item [x context fills]); a
block is sampled without replacement by drawing distinct indices from ``range(size)`` with
``random.Random(seed)`` and decoding them as mixed-radix numbers. So no pair repeats, no
rejection loop is needed, and a request larger than the space fails up front.

Shares: ``n`` is split evenly over the requested families (the first families in the given
order get the remainder) and the families are interleaved round-robin, so any prefix of the
list keeps the proportions. Within the burglar family half of the pairs have no context
sentence (the paper's form) and half start with one, spread evenly over the sentences.
"""

from __future__ import annotations

import difflib
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from soo.core.prompts import contains_phrase
from soo.data.templates import (
    BURGLAR_TEMPLATES,
    BURGLAR_VOCABULARY,
    GENERAL_ADJECTIVES,
    GENERAL_OTHER_REFERENT,
    GENERAL_TEMPLATES,
    GENERAL_TOPICS,
    SELF_REFERENCE_WORDS,
    SPLITS,
    TEMPLATES_BY_ID,
    VERB_AGREEMENT,
    other_perspective,
    template_slots,
)

FAMILIES = ("burglar", "general")


# --- generation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """A product of vocabulary axes; ``build`` turns one choice per axis into a record."""

    radices: tuple[int, ...]
    build: Callable[[tuple[int, ...]], dict]

    @property
    def size(self) -> int:
        return math.prod(self.radices)


def _unrank(index: int, radices: Sequence[int]) -> tuple[int, ...]:
    """The mixed-radix digits of ``index`` (first axis most significant)."""
    digits = []
    for radix in reversed(radices):
        index, digit = divmod(index, radix)
        digits.append(digit)
    return tuple(reversed(digits))


def _sample_block(block: _Block, count: int, rng: random.Random) -> list[dict]:
    # random.sample over a range picks distinct indices without materializing the range.
    return [block.build(_unrank(index, block.radices)) for index in rng.sample(range(block.size), count)]


def _spread(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` as evenly as capacities allow (earlier entries get remainders)."""
    counts = [0] * len(capacities)
    remaining = total
    open_slots = [i for i, capacity in enumerate(capacities) if capacity > 0]
    while remaining and open_slots:
        share, extra = divmod(remaining, len(open_slots))
        for rank, i in enumerate(open_slots):
            give = min(share + (rank < extra), capacities[i] - counts[i])
            counts[i] += give
            remaining -= give
        open_slots = [i for i in open_slots if counts[i] < capacities[i]]
    if remaining:
        raise ValueError(f"cannot place {total} items in capacities {list(capacities)}")
    return counts


def _check_unique(pool_name: str, values: Sequence[str]) -> None:
    # Duplicate vocabulary entries would make the capacity count wrong and repeat pairs.
    duplicates = sorted(value for value, count in Counter(values).items() if count > 1)
    if duplicates:
        raise ValueError(f"{pool_name} has duplicate entries: {duplicates}")


def _burglar_blocks(split: str) -> tuple[_Block, list[_Block]]:
    """(block without context, one block per context sentence)."""
    vocab = BURGLAR_VOCABULARY[split]
    templates = BURGLAR_TEMPLATES
    fill_pools = {"room": vocab.rooms, "cheap_item": vocab.cheap_items}
    for pool_name, pool in [
        ("names", vocab.names),
        ("expensive_items", vocab.expensive_items),
        ("contexts", vocab.contexts),
        *fill_pools.items(),
    ]:
        _check_unique(f"burglar {split} {pool_name}", pool)

    def record(template_index: int, agent_index: int, item_index: int, context: str) -> dict:
        template = templates[template_index]
        agent = vocab.names[agent_index]
        item = vocab.expensive_items[item_index]
        self_body, other_body = template.render_pair(other_perspective(agent), item=item)
        prefix = f"{context} " if context else ""
        return {
            "id": "",
            "family": "burglar",
            "template": template.id,
            "split": split,
            "self_prompt": prefix + self_body,
            "other_prompt": prefix + other_body,
            "agent": agent,
            "item": item,
        }

    base_radices = (len(templates), len(vocab.names), len(vocab.expensive_items))
    plain = _Block(base_radices, lambda digits: record(*digits, context=""))

    def context_block(context_text: str) -> _Block:
        slots = tuple(dict.fromkeys(template_slots(context_text)))  # unique, in order
        unknown = [slot for slot in slots if slot not in fill_pools]
        if unknown:
            raise ValueError(f"context {context_text!r} has unknown slots {unknown}")
        pools = [fill_pools[slot] for slot in slots]

        def build(digits: tuple[int, ...]) -> dict:
            fills = {slot: pool[d] for slot, pool, d in zip(slots, pools, digits[3:])}
            return record(*digits[:3], context=context_text.format_map(fills))

        return _Block(base_radices + tuple(len(pool) for pool in pools), build)

    return plain, [context_block(text) for text in vocab.contexts]


def _general_block(split: str) -> _Block:
    topics = GENERAL_TOPICS[split]
    _check_unique(f"general {split} topics", topics)
    _check_unique("general adjectives", GENERAL_ADJECTIVES)
    other = other_perspective(GENERAL_OTHER_REFERENT)

    def build(digits: tuple[int, ...]) -> dict:
        template_index, adjective_index, topic_index = digits
        template = GENERAL_TEMPLATES[template_index]
        topic = topics[topic_index]
        self_prompt, other_prompt = template.render_pair(
            other, adjective=GENERAL_ADJECTIVES[adjective_index], topic=topic
        )
        return {
            "id": "",
            "family": "general",
            "template": template.id,
            "split": split,
            "self_prompt": self_prompt,
            "other_prompt": other_prompt,
            "agent": GENERAL_OTHER_REFERENT,
            "topic": topic,
        }

    return _Block((len(GENERAL_TEMPLATES), len(GENERAL_ADJECTIVES), len(topics)), build)


def family_capacity(family: str, split: str) -> int:
    """How many unique pairs ``family`` can produce in ``split``."""
    _check_family_and_split(family, split)
    if family == "burglar":
        plain, contextual = _burglar_blocks(split)
        return plain.size + sum(block.size for block in contextual)
    return _general_block(split).size


def _check_family_and_split(family: str, split: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(FAMILIES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")


def _generate_family(family: str, split: str, count: int, rng: random.Random) -> list[dict]:
    if family == "general":
        return _sample_block(_general_block(split), count, rng)
    plain, contextual = _burglar_blocks(split)
    n_plain, n_contextual = _spread(count, [plain.size, sum(block.size for block in contextual)])
    per_context = _spread(n_contextual, [block.size for block in contextual])
    records = _sample_block(plain, n_plain, rng)
    for block, k in zip(contextual, per_context):
        records.extend(_sample_block(block, k, rng))
    rng.shuffle(records)  # otherwise the file would run through the contexts in order
    return records


def generate_pairs(n: int, seed: int, split: str = "train", families: Sequence[str] = FAMILIES) -> list[dict]:
    """``n`` unique self/other pairs of ``split``, the same list for the same arguments.

    Raises ValueError for n <= 0, an unknown split or family, a repeated family, or when a
    family's share of ``n`` exceeds the number of unique pairs it can produce.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    families = tuple(families)
    if not families:
        raise ValueError("families must not be empty")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat, got {list(families)}")
    for family in families:
        _check_family_and_split(family, split)

    base, extra = divmod(n, len(families))
    counts = [base + (i < extra) for i in range(len(families))]
    capacities = [family_capacity(family, split) for family in families]
    for family, count, capacity in zip(families, counts, capacities):
        if count > capacity:
            # Family i gets n // k pairs, plus one if i < n % k: that fits while n <= k * c_i + i.
            max_n = min(len(families) * c + i for i, c in enumerate(capacities))
            raise ValueError(
                f"{family!r} family has only {capacity} unique pairs in split {split!r} but "
                f"{count} were requested (n={n} split evenly over families {list(families)}); "
                f"at most n={max_n} is possible with these families"
            )

    rng = random.Random(seed)
    per_family = [_generate_family(f, split, c, rng) for f, c in zip(families, counts)]

    records = []
    for position in range(max(counts)):  # round-robin interleave
        records.extend(chunk[position] for chunk in per_family if position < len(chunk))
    for index, record in enumerate(records):
        record["id"] = f"{split}-{index:06d}"

    distinct = {(record["self_prompt"], record["other_prompt"]) for record in records}
    if len(distinct) != len(records):  # would mean two axis values render the same text
        duplicates = len(records) - len(distinct)
        raise RuntimeError(f"generated {duplicates} duplicate pairs; check soo/data/templates.py")
    return records


# The paper's three phrasings, the only ones the authors' released training data uses.
RELEASED_TEMPLATE_IDS = ("burglar_goal", "burglar_intend", "burglar_planning")


def released_pairs(split: str = "train", n: int | None = None) -> list[dict]:
    """The released code's training set, rebuilt on this split's vocabulary: one pair per expensive
    item, in vocabulary order (the first ``n``; default all), cycling through the paper's three
    phrasings, no context sentence, one other agent for every pair (the split's first name: Bob in
    the test split, as in their data). Their list excluded the test set's items; a split does too."""
    _check_family_and_split("burglar", split)
    vocab = BURGLAR_VOCABULARY[split]
    items = vocab.expensive_items
    if n is not None and not 0 < n <= len(items):
        raise ValueError(f"--released makes one pair per item: n must be 1..{len(items)} for split {split!r}, got {n}")
    templates = [TEMPLATES_BY_ID[template_id] for template_id in RELEASED_TEMPLATE_IDS]
    agent = vocab.names[0]
    records = []
    for index, item in enumerate(items[:n]):
        template = templates[index % len(templates)]
        self_prompt, other_prompt = template.render_pair(other_perspective(agent), item=item)
        records.append(
            {
                "id": f"{split}-released-{index:04d}",
                "family": "burglar",
                "template": template.id,
                "split": split,
                "self_prompt": self_prompt,
                "other_prompt": other_prompt,
                "agent": agent,
                "item": item,
            }
        )
    return records


def summarize(records: Sequence[Mapping]) -> str:
    """A table of pair counts per family and template, with subtotals and a total."""
    counts = Counter((str(r.get("family", "(none)")), str(r.get("template", "(none)"))) for r in records)
    rows = [("family", "template", "pairs")]
    for family in sorted({family for family, _ in counts}):
        family_templates = sorted((t, c) for (f, t), c in counts.items() if f == family)
        rows.extend((family, template, str(count)) for template, count in family_templates)
        rows.append((family, "(all)", str(sum(count for _, count in family_templates))))
    rows.append(("total", "", str(len(records))))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        f"{family:<{widths[0]}}  {template:<{widths[1]}}  {count:>{widths[2]}}" for family, template, count in rows
    )


# --- invariant: the two prompts differ only in who is referenced -------------------------

_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def reference_difference_problems(self_prompt: str, other_prompt: str, referent: str) -> list[str]:
    """What makes a pair differ in more than who is referenced; empty when the pair is clean.

    The prompts are compared word by word (difflib). Every differing stretch must consist of
    self-reference words (you, yourself, your) on the self side and the referent's words
    (``referent``, ``referent's``) on the other side, plus verbs that agree with the changed
    subject ("You have" -> "Bob has"; see ``VERB_AGREEMENT``). A "you" that addresses the
    model in both prompts ("If you needed to suggest ...") is shared text and is not a
    difference. The referent must appear in the other prompt and not in the self prompt, and
    verbs right after the subject must agree with it (not "Bob intend", not "You intends").
    """
    if self_prompt == other_prompt:
        return ["the self and other prompts are identical"]
    problems = []
    if not contains_phrase(other_prompt, referent):
        problems.append(f"other prompt does not mention {referent!r}")
    if contains_phrase(self_prompt, referent):
        problems.append(f"self prompt mentions {referent!r}")

    self_words = set(SELF_REFERENCE_WORDS)
    other_words = {token.lower() for token in _tokens(referent) + _tokens(f"{referent}'s")}
    self_tokens, other_tokens = _tokens(self_prompt), _tokens(other_prompt)
    matcher = difflib.SequenceMatcher(None, self_tokens, other_tokens, autojunk=False)
    reference_changes = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        self_chunk, other_chunk = self_tokens[i1:i2], other_tokens[j1:j2]
        where = f"{' '.join(self_chunk)!r} -> {' '.join(other_chunk)!r}"
        self_refs = [t for t in self_chunk if t.lower() in self_words]
        other_refs = [t for t in other_chunk if t.lower() in other_words]
        self_rest = [t.lower() for t in self_chunk if t.lower() not in self_words]
        other_rest = [t.lower() for t in other_chunk if t.lower() not in other_words]
        agreeing = [VERB_AGREEMENT.get(token) for token in self_rest]
        if None in agreeing or agreeing != other_rest:
            problems.append(f"{where}: differs in more than the reference and its verbs")
        elif bool(self_refs) != bool(other_refs):
            problems.append(f"{where}: a reference on one side only")
        reference_changes += bool(self_refs and other_refs)
    if reference_changes == 0:
        problems.append("no self reference is replaced by the referent")
    # A verb in the wrong person right after the subject ("Bob intend", "You intends") is shared
    # text, so the diff above cannot see it.
    for prompt, subject, wrong_forms in [
        (other_prompt, referent, VERB_AGREEMENT.keys()),
        (self_prompt, "you", VERB_AGREEMENT.values()),
    ]:
        pattern = rf"(?<!\w){re.escape(subject)} ({'|'.join(wrong_forms)})(?!\w)"
        for unagreed in re.finditer(pattern, prompt, re.IGNORECASE):
            problems.append(f"verb does not agree with its subject: {unagreed.group(0)!r}")
    return problems
