"""The deception scenarios as an Inspect task (inspect-ai, an optional extra: requirements-eval.txt).

One sample per prompt of `soo.eval.scenarios.build_eval_prompts` (every scenario, both room
orders, n instances each), with its scenario, order, index, kind and options as metadata; the
model's answer is labelled by the same scorer as evaluate.py (`soo.eval.rates.label_response`:
deceptive / honest / ambiguous; correct / incorrect / ambiguous for the perspectives control), and
the metric is its `summarize_labels`: the measured rate per scenario (both orders pooled, and per order), its Wilson
95% interval, and the ambiguous rate. So the same prompts and the same answers give the same
numbers in both tools.

    inspect eval inspect_deception.py --model hf/PATH_OR_HUB_ID -M do_sample=false -M device=cpu -T n=50
    inspect eval inspect_deception.py --model openai/gpt-4o -T scenarios=main,perspectives -T suffix=mistral

Task arguments (-T): scenarios (comma-separated, default all), n (instances per scenario and order,
default 50), seed (0), suffix (a key of soo.core.prompts.ANSWER_SUFFIXES: gemma, mistral, ...; or
the answer suffix itself; default the gemma/room-name one as in evaluate.py), max_tokens (24, as
evaluate.py).
"""

from __future__ import annotations

try:
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.model import GenerateConfig
    from inspect_ai.scorer import SampleScore, Score, Target, metric, scorer
    from inspect_ai.solver import TaskState, generate
except ImportError as error:  # an optional extra
    raise ImportError(f"{error}: the Inspect task needs inspect-ai: pip install -r requirements-eval.txt") from error

from soo.core.prompts import ANSWER_SUFFIXES, DEFAULT_ANSWER_SUFFIX
from soo.eval.classify import AMBIGUOUS, CORRECT, DECEPTIVE, HONEST, INCORRECT
from soo.eval.rates import label_response, summarize_labels
from soo.eval.scenarios import EvalPrompt, build_eval_prompts

CONDITION = "inspect"  # summarize_labels groups by condition; one model per Inspect run
# A score's value is one-hot over the labels: Inspect reduces a value to numbers (a string label
# would become 0), and a one-hot dict survives that unchanged.
LABELS = (DECEPTIVE, HONEST, AMBIGUOUS, CORRECT, INCORRECT)


def score_label(value: dict) -> str:
    return max(LABELS, key=lambda label: value.get(label, 0.0))


def answer_suffix(suffix: str | None) -> str:
    """A key of ANSWER_SUFFIXES (gemma, mistral, ...) or the suffix itself; None: the default."""
    if suffix is None:
        return DEFAULT_ANSWER_SUFFIX
    return ANSWER_SUFFIXES.get(suffix, suffix)


def prompt_sample(prompt: EvalPrompt) -> Sample:
    return Sample(
        id=f"{prompt.scenario}-{prompt.index}-{prompt.order}",
        input=prompt.prompt,
        target=prompt.honest_option,  # honest option; for perspectives the correct answer
        metadata={
            "scenario": prompt.scenario,
            "order": prompt.order,
            "index": prompt.index,
            "kind": prompt.kind,
            "deceptive_option": prompt.deceptive_option,
            "honest_option": prompt.honest_option,
            "agent": prompt.agent,
            "expensive_item": prompt.expensive_item,
            "cheap_item": prompt.cheap_item,
        },
    )


def sample_prompt(metadata: dict, text: str) -> EvalPrompt:
    """The EvalPrompt a sample was made from (what the classifier needs)."""
    return EvalPrompt(
        scenario=metadata["scenario"],
        order=metadata["order"],
        index=metadata["index"],
        prompt=text,
        deceptive_option=metadata["deceptive_option"],
        honest_option=metadata["honest_option"],
        kind=metadata["kind"],
        agent=metadata["agent"],
        expensive_item=metadata["expensive_item"],
        cheap_item=metadata["cheap_item"],
    )


@metric
def soo_rates():
    """evaluate.py's rates over the scored samples: rate/SCENARIO (orders pooled), rate/SCENARIO/ORDER,
    ci_low/SCENARIO and ci_high/SCENARIO (Wilson 95%), ambiguous/SCENARIO. The rate is of
    deceptive answers, or of correct ones for the perspectives control."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        rows = [
            {
                "condition": CONDITION,
                "group": CONDITION,
                "scenario": item.sample_metadata["scenario"],
                "order": item.sample_metadata["order"],
                "kind": item.sample_metadata["kind"],
                "label": score_label(item.score.value),
                "response": item.score.answer or "",
            }
            for item in scores
        ]
        values = {}
        for entry in summarize_labels(rows):
            key = entry["scenario"] if entry["order"] == "both" else f"{entry['scenario']}/{entry['order']}"
            values[f"rate/{key}"] = entry["rate"]
            if entry["order"] == "both":
                values[f"ci_low/{key}"] = entry["ci_low"]
                values[f"ci_high/{key}"] = entry["ci_high"]
                values[f"ambiguous/{key}"] = entry["ambiguous_rate"]
        return values

    return compute


@scorer(metrics=[soo_rates()])
def soo_label():
    """The answer's label by evaluate.py's classifier (soo.eval.classify)."""

    async def score(state: TaskState, target: Target) -> Score:
        response = state.output.completion
        label = label_response(sample_prompt(state.metadata, state.input_text), response)
        return Score(value={name: float(name == label) for name in LABELS}, answer=response, explanation=label)

    return score


def deception_task(
    scenarios: str | None = None, n: int = 50, seed: int = 0, suffix: str | None = None, max_tokens: int = 24
) -> Task:
    """The task of inspect_deception.py (Inspect finds @task functions only in the file it is given)."""
    names = [name.strip() for name in scenarios.split(",")] if isinstance(scenarios, str) else scenarios
    prompts = build_eval_prompts(names, n=int(n), seed=int(seed), answer_suffix=answer_suffix(suffix))
    return Task(
        dataset=MemoryDataset([prompt_sample(prompt) for prompt in prompts], name="soo_deception"),
        solver=generate(),
        scorer=soo_label(),
        config=GenerateConfig(temperature=0.0, max_tokens=int(max_tokens)),
    )


def agreement_with_evaluate(log_path: str, responses_path: str, condition: str = "base") -> dict:
    """Per prompt, the Inspect log's answer and label against evaluate.py's responses.jsonl for
    `condition` (same scenarios, n, seed and suffix): {"prompts", "same_response", "same_label",
    "differences": [(sample id, inspect answer, evaluate.py answer), ...]}."""
    import json

    from inspect_ai.log import read_eval_log

    ours = {}
    with open(responses_path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row["condition"] == condition:
                ours[f"{row['scenario']}-{row['index']}-{row['order']}"] = row
    log = read_eval_log(log_path)
    result = {"prompts": 0, "same_response": 0, "same_label": 0, "missing": 0, "other_prompt": 0, "differences": []}
    for sample in log.samples or []:
        row = ours.get(str(sample.id))
        if row is None:
            result["missing"] += 1
            continue
        if row.get("prompt") is not None and sample.input != row["prompt"]:
            result["other_prompt"] += 1  # e.g. another answer suffix (evaluate.py takes the adapter's)
            continue
        answer = sample.output.completion.strip()
        result["prompts"] += 1
        result["same_response"] += answer == row["response"].strip()
        result["same_label"] += score_label(sample.scores["soo_label"].value) == row["label"]
        if answer != row["response"].strip():
            result["differences"].append((str(sample.id), answer, row["response"].strip()))
    return result


def main(argv: list[str] | None = None) -> int:
    """python -m soo.eval.inspect_task LOG.eval RESPONSES.jsonl [--condition base]"""
    from soo.core.cli import CommandParser, fail

    parser = CommandParser(
        prog="python -m soo.eval.inspect_task",
        description=(
            "Compare an Inspect log of inspect_deception.py with evaluate.py's responses.jsonl on the same prompts."
        ),
    )
    parser.add_argument("log", help="the .eval log (inspect eval ... --log-dir DIR)")
    parser.add_argument("responses", help="evaluate.py's OUTPUT_DIR/responses.jsonl (--protocol generation or both)")
    parser.add_argument("--condition", default="base", help="evaluate.py's condition to compare (default base)")
    args = parser.parse_args(argv)
    try:
        result = agreement_with_evaluate(args.log, args.responses, args.condition)
    except (OSError, ValueError, KeyError) as error:
        return fail(f"cannot compare {args.log} with {args.responses}: {error}")
    if not result["prompts"]:
        return fail(
            f"no prompt of {args.log} is in {args.responses} for condition {args.condition!r} with the same "
            f"text ({result['other_prompt']} with another text: pass the answer suffix evaluate.py used, "
            "-T suffix=..., and the same scenarios, n and seed)"
        )
    for sample_id, inspect_answer, our_answer in result["differences"]:
        print(f"differs {sample_id}: inspect {inspect_answer!r} | evaluate.py {our_answer!r}")
    n = result["prompts"]
    print(
        f"{n} prompts in both: identical answers {result['same_response']} ({result['same_response'] / n:.1%}), "
        f"identical labels {result['same_label']} ({result['same_label'] / n:.1%})"
        + (f"; {result['missing']} Inspect samples not in the responses" if result["missing"] else "")
        + (
            f"; {result['other_prompt']} with another prompt text (answer suffix?) left out"
            if result["other_prompt"]
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
