"""Benchmark: forced-choice scoring, the way it was vs each change, interleaved in one run.

    python -m benchmarks.scoring                        # 256 prompts from the n = 250 protocol, 2 rounds
    python -m benchmarks.scoring --n 10 --prompts 0     # every prompt of the n = 10 protocol (260)

Methods, on the same prompts (evaluation scenarios, both room orders, the embedded model's answer
prefix), timed in rounds A B C D A B C D ... so machine noise hits all of them alike:
  whole, all logits        every context runs whole, the LM head on every position (before);
  whole, last logit        the LM head on the last position only;
  shared prefix            and the tokens a batch's contexts share run once;
  shared prefix + groups   and the tokens each group of neighbours shares beyond that run once per
                           group (`soo.eval.prefix_cache.group_prefix`; `score_choices`' default).
The prompts are --prompts contexts of the n-instance protocol (every scenario), taken as evenly
spaced blocks of --batch_size neighbours in sorted order, as `score_choices` batches them, so a
sample shares as much as the whole protocol does; 0 takes every prompt.
Reports prompts/s, the speed ratio to the first method (medians of this run) and the largest
difference of any summed option log-probability from the first method's. A script, not a test;
the markdown report is appended to results/benchmarks/scoring.md (--output_file; empty to skip;
docs/benchmarks/scoring.md is the committed one).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks._cli import (
    SCORING_REPORT,
    add_output_file_argument,
    fail,
    non_negative_int,
    output_file_error,
    positive_int,
)
from benchmarks._machine import cpu_snapshot, load_average, machine_info, others_cpu_share
from benchmarks.generation_methods import fmt_range, neighbour_blocks
from soo.core.cli import CommandParser


class AllLogits(torch.nn.Module):
    """The model with no `logits_to_keep` in its signature, so the scorer computes every
    position's logits, as it did before that change."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config, self.generation_config = model.config, model.generation_config

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        from soo.eval.prefix_cache import forward_arguments

        passed = {forward_arguments(self.model)[0]: cache} if cache is not None else {}
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache, **passed
        )


METHODS = ("whole, all logits", "whole, last logit", "shared prefix", "shared prefix + groups")


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="(default: the embedded SmolLM2-135M)")
    parser.add_argument(
        "--n",
        type=positive_int,
        default=250,
        help="instances per scenario and order of the protocol sampled (default 250, the paper's)",
    )
    parser.add_argument(
        "--prompts",
        type=non_negative_int,
        default=256,
        help="prompts timed, blocks of --batch_size neighbours (default 256; 0: all)",
    )
    parser.add_argument("--batch_size", type=positive_int, default=16, help="(default 16, as evaluate.py)")
    parser.add_argument("--repeats", type=positive_int, default=2, help="rounds over the methods (default 2)")
    parser.add_argument("--answer_prefix", default=None, help="({verb}: the scenario's; default 'I would {verb} the')")
    add_output_file_argument(parser, SCORING_REPORT)
    args = parser.parse_args(argv)
    if output_file_error(args.output_file):
        return 2
    from soo.core.modeling import ModelLoadError, load_model, load_tokenizer, resolve_model_path
    from soo.core.prompts import ANSWER_SUFFIXES, DEFAULT_ANSWER_PREFIX
    from soo.eval.forced_choice import answer_prefix, score_choices, tokenize_choice
    from soo.eval.scenarios import SCENARIOS, build_eval_prompts

    try:
        model_path = resolve_model_path(args.model_name_or_path)
        tokenizer, model = load_tokenizer(model_path), load_model(model_path, dtype="float32")
    except (OSError, ModelLoadError) as error:
        return fail(error)
    template = args.answer_prefix or DEFAULT_ANSWER_PREFIX
    prompts = build_eval_prompts(list(SCENARIOS), n=args.n, seed=0, answer_suffix=ANSWER_SUFFIXES["mistral"])
    items = [
        tokenize_choice(tokenizer, p.prompt, answer_prefix(template, p), (p.deceptive_option, p.honest_option))
        for p in prompts
    ]
    if args.prompts:
        items = [
            items[index] for index in neighbour_blocks([item.context for item in items], args.prompts, args.batch_size)
        ]
    runs = {name: {"seconds": [], "others": []} for name in METHODS}
    scores = {}
    for round_ in range(args.repeats):
        for name in METHODS:
            target = AllLogits(model) if name == METHODS[0] else model
            before, started = cpu_snapshot(), time.perf_counter()
            scores[name] = score_choices(
                target,
                tokenizer,
                items,
                batch_size=args.batch_size,
                progress=False,
                share_prefix=name.startswith("shared prefix"),
                group_prefixes=name == "shared prefix + groups",
            )
            runs[name]["seconds"].append(time.perf_counter() - started)
            runs[name]["others"].append(others_cpu_share(before, cpu_snapshot()))
            print(f"round {round_ + 1}: {name}: {runs[name]['seconds'][-1]:.1f} s", file=sys.stderr, flush=True)
    reference = torch.tensor(scores[METHODS[0]])
    baseline = statistics.median(runs[METHODS[0]]["seconds"])
    table = [
        "| method | time s (min / median / max) | prompts/s | speed vs before | max \\|Δ log-prob\\| | "
        "CPU used by others (max) |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHODS:
        seconds = runs[name]["seconds"]
        difference = (torch.tensor(scores[name]) - reference).abs().max().item()
        table.append(
            f"| {name} | {fmt_range(seconds)} | {len(items) / statistics.median(seconds):.2f} | "
            f"{baseline / statistics.median(seconds):.2f}x | {difference:.1e} | "
            f"{100 * max(runs[name]['others']):.0f}% |"
        )
    print("\n".join(table))
    if args.output_file:
        info = machine_info()
        sample = f"blocks of {args.batch_size} neighbours in sorted order" if args.prompts else "all"
        command = "python -m benchmarks.scoring " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = [
            f"## {time.strftime('%Y-%m-%d %H:%M')}: `{command.strip()}`",
            "",
            f"- model: {model_path}; prompts: {len(items)} of the {len(prompts)} of every scenario, n = "
            f"{args.n} per order, seed 0 ({sample}); batch {args.batch_size}; {args.repeats} rounds, "
            "methods interleaved",
            f"- machine: {info['cpu']}, {info['cpu_count']} CPUs, torch {info['torch']} "
            f"({info['torch_threads']} threads), transformers {info['transformers']}; load average before "
            f"the report {load_average()}",
            "",
            *table,
            "",
        ]
        path = Path(args.output_file)
        header = (
            ""
            if path.is_file()
            else (
                "# Benchmark: forced-choice scoring\n\nWritten by `python -m "
                "benchmarks.scoring`; runs appended, newest last.\n\n"
            )
        )
        with path.open("a", encoding="utf-8") as handle:
            handle.write(header + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
