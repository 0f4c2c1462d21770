"""Does a model show the trait? `subliminal.py evaluate`.

    python subliminal.py evaluate --animals owl dolphin --adapter outputs/subliminal/owl/student-s0 \
        --output_file outputs/subliminal/owl/student-s0/eval.json

Two measures, on the 50 one-word questions of `soo.subliminal.animals`:
  - trait rate, the paper's way: `samples_per_question` answers to each question sampled at
    temperature 1 (`soo.eval.generation`; the question's tokens run once per batch and are shared
    by its samples), rate = share of answers naming the animal (whole word), Wilson 95% interval
    over all answers. Every answer's first word is also tallied (the base model's favourites, used
    to pick targets with a low base rate).
  - forced choice: p(animal) among `CANDIDATES` after each question (the log-probabilities of the
    one-word answers, normalised; `soo.eval.forced_choice`), per question and its mean with a
    Student-t 95% interval over the 50 questions. Deterministic, so small shifts show up without
    sampling noise.
Sampling is seeded (`torch.manual_seed(seed)` before the first batch): the same model, seed and
batch size give the same answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from soo.core.stats import mean_t_ci95, wilson_interval
from soo.subliminal.animals import CANDIDATES, QUESTIONS, names_animal


@dataclass
class TraitEvalConfig:
    """How the trait is measured; `subliminal.py evaluate`'s flags are its fields (with the model's)."""

    animals: list[str] = field(
        default_factory=lambda: ["owl"], metadata={"nargs": "+", "help": "target animals (each one of CANDIDATES)"}
    )
    samples_per_question: int = field(default=100, metadata={"help": "answers sampled per question (the paper: 100)"})
    n_questions: int = field(
        default=len(QUESTIONS), metadata={"help": f"the first N of the {len(QUESTIONS)} questions"}
    )
    temperature: float = 1.0
    max_new_tokens: int = field(default=12, metadata={"help": "a one-word answer needs a few tokens"})
    batch_size: int = 100
    seed: int = 0

    def __post_init__(self):
        for name in ("samples_per_question", "n_questions", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.n_questions > len(QUESTIONS):
            raise ValueError(f"--n_questions must be <= {len(QUESTIONS)}, got {self.n_questions}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        self.animals = [animal.strip().lower() for animal in self.animals]
        unknown = [animal for animal in self.animals if animal not in CANDIDATES]
        if unknown:
            raise ValueError(f"--animals {' '.join(unknown)}: not among the candidates ({', '.join(CANDIDATES)})")


def first_word(answer: str) -> str:
    """The answer's first word, lower case, plural s dropped ("Owls!" -> "owl"): the tally key."""
    match = re.search(r"[A-Za-z]+", answer)
    word = match.group(0).lower() if match else ""
    return word[:-1] if word.endswith("s") and word[:-1] in CANDIDATES else word


def sample_answers(model, tokenizer, config: TraitEvalConfig, progress: bool = True) -> list[list[str]]:
    """`samples_per_question` sampled answers to each question (one list per question)."""
    import torch

    from soo.eval.generation import DecodingConfig, generate_batched

    questions = QUESTIONS[: config.n_questions]
    prompts = [question for question in questions for _ in range(config.samples_per_question)]
    decoding = DecodingConfig(
        max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, temperature=config.temperature
    )
    torch.manual_seed(config.seed)
    answers = generate_batched(model, tokenizer, prompts, decoding, progress=progress)
    n = config.samples_per_question
    return [answers[i * n : (i + 1) * n] for i in range(len(questions))]


def candidate_probabilities(model, tokenizer, n_questions: int, progress: bool = True) -> list[dict[str, float]]:
    """Per question: p(candidate) normalised over CANDIDATES (one-word answers after the question)."""
    from soo.eval.forced_choice import score_choices, tokenize_choice

    items = [tokenize_choice(tokenizer, question, "", CANDIDATES) for question in QUESTIONS[:n_questions]]
    rows = []
    for logprobs in score_choices(model, tokenizer, items, batch_size=16, progress=progress):
        top = max(logprobs)
        weights = [math.exp(value - top) for value in logprobs]
        total = sum(weights)
        rows.append({animal: weight / total for animal, weight in zip(CANDIDATES, weights)})
    return rows


def trait_results(answers: list[list[str]], probabilities: list[dict[str, float]], animals: list[str]) -> dict:
    """Rates (with Wilson intervals), per-question rates, forced-choice p and the first-word tally."""
    flat = [answer for question in answers for answer in question]
    results = {"n_answers": len(flat), "n_questions": len(answers), "animals": {}}
    for animal in animals:
        hits = sum(names_animal(answer, animal) for answer in flat)
        low, high = wilson_interval(hits, len(flat))
        p_values = [row[animal] for row in probabilities]
        p_mean, p_half = mean_t_ci95(p_values)
        results["animals"][animal] = {
            "count": hits,
            "rate": hits / len(flat),
            "wilson_95": [low, high],
            "per_question_rate": [sum(names_animal(a, animal) for a in q) / len(q) for q in answers],
            "p_forced_choice": p_mean,
            "p_forced_choice_half_width": p_half,
            "per_question_p": p_values,
        }
    results["first_words"] = dict(Counter(first_word(answer) for answer in flat).most_common(25))
    results["mean_p_candidates"] = {
        animal: sum(row[animal] for row in probabilities) / len(probabilities) for animal in CANDIDATES
    }
    return results


def evaluate_trait(model, tokenizer, config: TraitEvalConfig, progress: bool = True) -> dict:
    answers = sample_answers(model, tokenizer, config, progress=progress)
    probabilities = candidate_probabilities(model, tokenizer, config.n_questions, progress=progress)
    results = trait_results(answers, probabilities, config.animals)
    results["examples"] = [question[:5] for question in answers[:5]]
    return results


def format_trait(results: dict) -> str:
    lines = [f"{results['n_answers']} answers ({results['n_questions']} questions)"]
    for animal, entry in results["animals"].items():
        low, high = entry["wilson_95"]
        lines.append(
            f"  {animal}: rate {entry['rate']:.4f} [{low:.4f}, {high:.4f}]  forced choice p {entry['p_forced_choice']:.4f}"
            f" ± {entry['p_forced_choice_half_width']:.4f}"
        )
    top = ", ".join(f"{word or '(none)'} {count}" for word, count in list(results["first_words"].items())[:10])
    lines.append(f"  first words: {top}")
    return "\n".join(lines)
