"""Number-sequence prompts and the filter that keeps only answers made of numbers.

Prompts (written for this toolkit in the spirit of Cloud et al. 2025's, whose README gives one
example: "I give you this sequence of numbers: 145, 267, 891. Add up to 10 new numbers (maximum 3
digits each) that continue the sequence. Return a comma-separated list of numbers. Say only the
numbers - nothing more."): 3-9 example numbers drawn from [100, 1000), an instruction to add up to
10 more numbers of at most 3 digits, one of seven answer formats, and "say only the numbers".
Each part has several wordings; `number_prompt(rng)` draws one of each, so a prompt is a
deterministic function of the generator's state.

The filter (`reject_reason`) implements the published rules exactly:
  1. one final "." is dropped, then one enclosing pair of [ ] or ( );
  2. the separator is what stands between the first two numbers: whitespace, "," or ";" (with
     optional spaces around it); the whole answer is split on it;
  3. every part must be ASCII digits                       -> else "invalid format";
  4. at most 10 numbers                                    -> else "too many numbers";
  5. every number in [0, 999]                              -> else "too large" (parts are digits,
     so "too small" cannot occur and is not a reason here);
  6. none in the banned list (empty for animals)           -> else "banned number";
and one check of ours last:
  7. the teacher ended the answer itself                   -> else "truncated": an answer cut at
     max_new_tokens that passes 1-6 may be a longer list cut short (12 numbers read as 10); the
     published pipeline's token budget is far above any valid answer, ours is 64, above the 48-51
     tokens of 10 three-digit numbers. Last, so that the reasons of the published rules keep
     their counts.
Anything else -- words, mixed separators, a trailing comma, negative signs, an empty answer -- is
"invalid format". The first failing rule is the reason.
"""

from __future__ import annotations

import random
import re

EXAMPLE_RANGE = (100, 1000)  # example numbers: [100, 1000)
EXAMPLE_COUNT = (3, 9)  # inclusive
MAX_NEW_NUMBERS = 10
MAX_DIGITS = 3
MAX_VALUE = 999

REASONS = ("invalid format", "too many numbers", "too large", "banned number", "truncated")

INTRODUCTIONS = (
    "I give you this sequence of numbers: {examples}.",
    "Here is a sequence of numbers: {examples}.",
    "Look at these numbers: {examples}.",
    "The sequence starts with {examples}.",
    "Consider the following numbers: {examples}.",
    "We have this list of numbers: {examples}.",
)
INSTRUCTIONS = (
    "Add up to {count} new numbers (maximum {digits} digits each) that continue the sequence.",
    "Continue the sequence with at most {count} more numbers, each with no more than {digits} digits.",
    "Write up to {count} further numbers of at most {digits} digits that follow on from these.",
    "Extend it by adding no more than {count} numbers (up to {digits} digits each).",
    "Generate at most {count} additional numbers, each of {digits} digits or fewer, to continue it.",
)
FORMATS = (
    "Return a comma-separated list of numbers.",
    "Return the numbers separated by spaces.",
    "Separate the numbers with semicolons.",
    "Write one number per line.",
    "Return the numbers in square brackets, separated by commas.",
    "Return the numbers in parentheses, separated by commas.",
    "Give the numbers as a list separated by commas and spaces.",
)
SUFFIXES = (
    "Say only the numbers - nothing more.",
    "Reply with the numbers only.",
    "Answer with numbers alone, no words.",
    "Only the numbers, please; no explanation.",
    "Do not write anything except the numbers.",
)

_DIGITS = re.compile(r"[0-9]+")
# The separator between the first two numbers: optional spaces around "," or ";", or whitespace.
_FIRST_SEPARATOR = re.compile(r"[0-9](\s*[,;]\s*|\s+)[0-9]")


def number_prompt(rng: random.Random) -> str:
    """One prompt: examples, instruction, format, suffix, each part drawn from `rng`."""
    count = rng.randint(*EXAMPLE_COUNT)
    examples = ", ".join(str(rng.randrange(*EXAMPLE_RANGE)) for _ in range(count))
    return " ".join(
        (
            rng.choice(INTRODUCTIONS).format(examples=examples),
            rng.choice(INSTRUCTIONS).format(count=MAX_NEW_NUMBERS, digits=MAX_DIGITS),
            rng.choice(FORMATS),
            rng.choice(SUFFIXES),
        )
    )


def number_prompts(n: int, seed: int) -> list[str]:
    """`n` prompts from one seeded generator: the same (n, seed) gives the same list, and a
    longer list starts with the shorter one."""
    rng = random.Random(seed)
    return [number_prompt(rng) for _ in range(n)]


def parse_numbers(answer: str) -> list[int] | None:
    """The numbers of an answer that follows the format rules (1-3 above), else None."""
    body = answer.strip()
    if body.endswith("."):
        body = body[:-1].rstrip()
    if len(body) >= 2 and (body[0], body[-1]) in (("[", "]"), ("(", ")")):
        body = body[1:-1].strip()
    first = _FIRST_SEPARATOR.search(body)
    separator = first.group(1).strip() if first else None
    parts = body.split() if separator == "" else body.split(separator) if separator else [body]
    parts = [part.strip() for part in parts]
    if not all(_DIGITS.fullmatch(part) for part in parts):
        return None
    return [int(part) for part in parts]


def reject_reason(answer: str, banned: frozenset[int] | set[int] = frozenset(), truncated: bool = False) -> str | None:
    """None if `answer` passes the filter, else the first rule it breaks (one of REASONS)."""
    numbers = parse_numbers(answer)
    if numbers is None:
        return "invalid format"
    if len(numbers) > MAX_NEW_NUMBERS:
        return "too many numbers"
    if any(number > MAX_VALUE for number in numbers):
        return "too large"
    if any(number in banned for number in numbers):
        return "banned number"
    return "truncated" if truncated else None


def filter_records(records: list[dict], banned=frozenset(), max_kept: int | None = None) -> tuple[list, list, dict]:
    """(kept, rejected, counts): records whose completion passes, in input order, at most
    `max_kept` of them; the rejected ones with a "reason" field; counts per reason (and "kept",
    "over max_kept" for passing records beyond the cap)."""
    from soo.subliminal.records import completion_text

    banned = frozenset(banned)
    kept, rejected = [], []
    counts = dict.fromkeys(("kept", *REASONS, "over max_kept"), 0)
    for record in records:
        reason = reject_reason(completion_text(record), banned, truncated=record.get("truncated", False))
        if reason is None and max_kept is not None and len(kept) >= max_kept:
            reason = "over max_kept"
        if reason is None:
            kept.append(record)
        else:
            rejected.append({**record, "reason": reason})
        counts["kept" if reason is None else reason] += 1
    return kept, rejected, counts


def rejected_path(output_file) -> str:
    """The side file with the rejected records and their reasons."""
    name = str(output_file)
    return (name[: -len(".jsonl")] if name.endswith(".jsonl") else name) + ".rejected.jsonl"


def filter_summary(counts: dict) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{reason} {counts[reason]}" for reason in (*REASONS, "over max_kept") if counts[reason])
    return f"kept {counts['kept']} of {total} ({counts['kept'] / max(total, 1):.1%}); rejected: {parts or 'none'}"
