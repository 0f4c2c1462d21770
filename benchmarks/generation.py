"""Benchmark: batched greedy generation vs one prompt at a time, on the main burglar scenario.

    python -m benchmarks.generation                       # n=250, max_new_tokens 16, batch 16 and 32
    python -m benchmarks.generation --n 40 --repeats 1    # a quick run
    python -m benchmarks.generation --n 64 --max_new_tokens 75 --batch_sizes 32 --repeats 2 --pool_n 250 \
        --answer_suffix "Start your response with 'I would'" --append   # the protocol's batches, SmolLM2's suffix

Loads the embedded default model (SmolLM2-135M-Instruct; the first use converts its GGUF, ~30 s),
builds N prompts of the main evaluation scenario (``soo.eval.scenarios.build_eval_prompts``, both
room orders), and times `generate_one_at_a_time` (the official code's loop) and `generate_batched`
at each batch size on the same prompts, greedy, with every prompt run whole ("whole prompts",
before), with the tokens a batch shares run once ("shared prefix", evaluate.py's default) and
with, in addition, the tokens each group of neighbours shares run once per group ("shared prefix
+ groups", `soo.eval.prefix_cache`; forced choice's default, off for generation where it did not
pay). With --pool_n the prompts are blocks of neighbours, in the evaluation's sorted order, from
the pool_n-instance protocol of the scenario: batches as dense as evaluate.py's at that n (a small
n alone shares less). Reports generated tokens/s, prompts/s, the speed ratio (sequential time /
batched time, both medians from this run) and how often the batched output equals the sequential
one exactly. Prefill-only passes (max_new_tokens=1) at the largest batch size, each way of
batching, show how much of the batched time is prompt processing, which batching cannot shrink
once the matmuls are compute-bound: sequential time / prefill time bounds the achievable ratio.

The table is printed last; a markdown report goes to results/benchmarks/generation.md (--output_file;
docs/benchmarks/generation.md is the committed one).
This is a script, not a test.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks._cli import GENERATION_REPORT, check_output_file, fail, non_negative_int, positive_int
from benchmarks._machine import load_average, machine_info, matmul_flops_per_second
from benchmarks.generation_methods import (
    BATCHINGS,
    Method,
    TokenCounter,
    agreement,
    build_prompts,
    flops_per_token,
    fmt_range,
    run_method,
)
from soo.core.cli import CommandParser
from soo.eval.generation import DecodingConfig, generate_batched


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=positive_int, default=250, help="number of prompts (default 250)")
    parser.add_argument(
        "--max_new_tokens", type=positive_int, default=16, help="tokens generated per prompt at most (default 16)"
    )
    parser.add_argument(
        "--batch_sizes",
        type=positive_int,
        nargs="+",
        default=[16, 32],
        help="batch sizes of the batched passes (default 16 32)",
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed passes per batch size (default 3)")
    parser.add_argument(
        "--sequential_repeats",
        type=positive_int,
        default=1,
        help="timed one-at-a-time passes (default 1: the slow one)",
    )
    parser.add_argument(
        "--no_prefill_pass", action="store_true", help="skip the prefill-only passes (one per way of batching)"
    )
    parser.add_argument(
        "--pool_n",
        type=non_negative_int,
        default=0,
        help="draw the n prompts as blocks of neighbours from this protocol size, e.g. 250, so "
        "batches share what evaluate.py's do (default 0: the first n prompts)",
    )
    parser.add_argument(
        "--model_name_or_path", default=None, help="model path or hub id (default: the embedded SmolLM2-135M)"
    )
    parser.add_argument("--device", default="cpu", help="torch device to generate on, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--answer_suffix", default=None, help="appended to every prompt (default: the evaluation's room-name suffix)"
    )
    parser.add_argument(
        "--output_file", default=GENERATION_REPORT, help=f"markdown report (default {GENERATION_REPORT})"
    )
    parser.add_argument("--append", action="store_true", help="append this run to the report instead of replacing it")
    parser.add_argument("--progress", action="store_true", help="show tqdm bars")
    args = parser.parse_args(argv)

    from soo.core.modeling import ModelLoadError, load_model, load_tokenizer, resolve_eos_token_ids, resolve_model_path

    try:  # bad input is refused before the model is loaded
        check_output_file(args.output_file)
        try:
            device = torch.device(args.device)
        except RuntimeError as error:
            raise ValueError(f"--device {args.device}: {error}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
        model_path = resolve_model_path(args.model_name_or_path)
    except (OSError, ModelLoadError, ValueError) as error:
        return fail(error)

    command = "python -m benchmarks.generation" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    info = machine_info()
    print(f"torch threads: {info['torch_threads']} (cpu_count {info['cpu_count']})", file=sys.stderr)
    load_at_start = load_average()

    load_start = time.perf_counter()
    try:
        tokenizer = load_tokenizer(model_path)
        model = load_model(model_path, dtype="float32").to(args.device).eval()
    except ModelLoadError as error:
        return fail(error)
    print(f"model {model_path} loaded in {time.perf_counter() - load_start:.1f} s", file=sys.stderr)

    prompts, prompt_source = build_prompts(args.n, args.answer_suffix, args.pool_n, max(args.batch_sizes), tokenizer)
    counter = TokenCounter(model, resolve_eos_token_ids(tokenizer, model))
    methods = [Method("one at a time", None)] + [
        Method(f"batched {size}, {kind}", size, share_prefix=share, group_prefixes=group)
        for size in args.batch_sizes
        for kind, share, group in BATCHINGS
    ]

    with counter:
        # Warm-up (untimed): first-call allocations and kernel selection.
        generate_batched(model, tokenizer, prompts[:4], DecodingConfig(max_new_tokens=2, batch_size=4), progress=False)
        # Interleave the methods repeat by repeat so slow drifts (a busy machine) hit all of them.
        for repeat in range(max(args.repeats, args.sequential_repeats)):
            print(f"repeat {repeat + 1}", file=sys.stderr)
            for method in methods:
                wanted = args.sequential_repeats if method.batch_size is None else args.repeats
                if repeat < wanted:
                    run_method(method, model, tokenizer, prompts, args.max_new_tokens, counter, args.progress)
        prefills = []
        if not args.no_prefill_pass:
            size = max(args.batch_sizes)
            for kind, share, group in BATCHINGS:
                prefills.append(Method(f"{kind}", size, share_prefix=share, group_prefixes=group))
                run_method(prefills[-1], model, tokenizer, prompts, 1, counter, args.progress)
    load_at_end = load_average()

    sequential = methods[0]
    reference = sequential.outputs[0]
    sequential_median = statistics.median(sequential.seconds)
    rows = []
    for method in methods:
        median = statistics.median(method.seconds)
        agree, differing = agreement(reference, method.outputs[0])
        stable = all(outputs == method.outputs[0] for outputs in method.outputs)
        rows.append(
            {
                "method": method.name,
                "seconds": fmt_range(method.seconds),
                "repeats": len(method.seconds),
                "tokens_per_s": method.new_tokens / median,
                "prompts_per_s": len(prompts) / median,
                "ratio": sequential_median / median,
                "agreement": f"{agree}/{len(prompts)} ({100 * agree / len(prompts):.1f}%)",
                "differing": differing,
                "stable": stable,
                "padding": method.padded_prompt_tokens / method.prompt_tokens - 1,
                "others_cpu": max(method.others_cpu),
            }
        )
    prefill_line = None
    if prefills:
        whole = prefills[0]
        achieved = whole.prompt_tokens * flops_per_token(model) / whole.seconds[0] / 1e9
        peak = statistics.median(matmul_flops_per_second(2048, 5)) / 1e9
        prefill_line = (
            f"Compute: the whole-prompt prefill ran {achieved:.0f} GFLOP/s of model arithmetic "
            f"(~2 x non-embedding parameters per prompt token), {100 * achieved / peak:.0f}% of this "
            f"machine's fp32 matmul rate ({peak:.0f} GFLOP/s, 2048x2048, same threads): prefill is "
            "compute-bound, so only fewer prompt tokens (shared prefixes) make it faster. "
        )
        prefill_line += "Prefill-only passes (max_new_tokens=1): " + "; ".join(
            f"batch {prefill.batch_size}, {prefill.name} {prefill.seconds[0]:.1f} s "
            f"({prefill.prompt_tokens / prefill.seconds[0]:.0f} prompt tokens/s; bound on "
            f"the speed ratio if batched decoding were free: {sequential_median / prefill.seconds[0]:.1f}x)"
            for prefill in prefills
        )

    header = [
        "method",
        "time s (min / median / max)",
        "repeats",
        "new tokens/s",
        "prompts/s",
        "speed vs 1-at-a-time",
        "agreement with 1-at-a-time",
        "prompt padding",
        "CPU used by others (max)",
    ]
    table = [header] + [
        [
            row["method"],
            row["seconds"],
            str(row["repeats"]),
            f"{row['tokens_per_s']:.1f}",
            f"{row['prompts_per_s']:.2f}",
            f"{row['ratio']:.2f}x",
            row["agreement"],
            f"{100 * row['padding']:.1f}%",
            f"{100 * row['others_cpu']:.0f}%",
        ]
        for row in rows
    ]

    write_report(
        Path(args.output_file),
        args,
        command,
        info,
        model_path,
        prompt_source,
        prompts,
        methods,
        rows,
        table,
        prefill_line,
        load_at_start,
        load_at_end,
    )

    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    print(
        f"\n{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy, fp32, {args.device}, "
        f"torch threads {info['torch_threads']}; new tokens generated (one at a time): {sequential.new_tokens}"
    )
    if prefill_line:
        print(prefill_line)
    print(f"report: {args.output_file}")
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    return 0


def write_report(
    path: Path,
    args,
    command,
    info,
    model_path,
    prompt_source,
    prompts,
    methods,
    rows,
    table,
    prefill_line,
    load_at_start,
    load_at_end,
) -> None:
    reference = methods[0].outputs[0]
    lines = [
        "# Benchmark: batched vs one-at-a-time greedy generation",
        "",
        f"Generated by `benchmarks/generation.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "",
        "## Command",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}; {info['cpu_count']} logical CPUs; torch threads {info['torch_threads']}",
        f"- device: {args.device}; {info['platform']}",
        f"- python {info['python']}, torch {info['torch']}, transformers {info['transformers']}",
        f"- load average (1/5/15 min) at start: {load_at_start}; at end: {load_at_end} "
        "(other processes on a shared machine slow every method; ratios come from one run, methods interleaved)",
        "",
        "## Setup",
        "",
        f"- model: `{model_path}` (fp32)",
        f"- prompts: {len(prompts)}, {prompt_source}",
        f"- greedy, max_new_tokens {args.max_new_tokens}, chat template (with the model's default system prompt)",
        f"- batch sizes {args.batch_sizes}; repeats: {args.repeats} per batch size, "
        f"{args.sequential_repeats} one-at-a-time",
        "- speed ratio = median one-at-a-time time / median batched time, same run, same prompts",
        "- new tokens: each response's tokens up to and including its first EOS (the padding that follows a "
        "finished row in a batch is not counted)",
        "- agreement = exact string match of the batched response with the one-at-a-time response, first repeat",
        "- prompt padding = padded prompt tokens / real prompt tokens - 1 (whole prompts: sorted by length "
        "before batching; shared prefix: sorted by token ids, so one scenario's prompts share a batch)",
        "- shared prefix: each batch's common tokens run once; + groups: also the tokens each group of "
        "neighbours shares beyond that, once per group (`soo.eval.prefix_cache.group_prefix`)",
        "- CPU used by others = share of all CPUs busy with other processes or hypervisor steal during a pass "
        "(from /proc/stat minus this process), the worst pass; a busy machine slows small-batch decoding most",
        "",
        "## Results",
        "",
    ]
    lines.append("| " + " | ".join(table[0]) + " |")
    lines.append("|" + "---|" * len(table[0]))
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    lines.append("")
    if prefill_line:
        lines += [prefill_line + ".", ""]
    lines += [
        "How to read it: one-at-a-time generation already processes each prompt in a single forward pass "
        "(prefill); batching amortises only the per-token decode steps, which at batch 1 are bound by "
        "reading the weights, not by arithmetic. On a CPU whose prefill is compute-bound, batched time cannot "
        "fall below the prefill-only time, so the speed ratio is capped by one-at-a-time time / prefill time and "
        "grows with max_new_tokens.",
        "",
    ]
    for row in rows[1:]:
        if not row["stable"]:
            lines.append(f"- {row['method']}: outputs differed between repeats (non-deterministic kernels?)")
        for index in row["differing"][:3]:
            lines.append(
                f"- {row['method']} differs on prompt {index}: one at a time {reference[index]!r}, "
                f"batched {methods[rows.index(row)].outputs[0][index]!r}"
            )
    lines += ["", "Example (prompt 0):", "", "```", prompts[0], "->", reference[0], "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.append and path.is_file():
        # Later runs become sections of the same document.
        lines = ["", "---", "", "#" + lines[0]] + ["#" + line if line.startswith("## ") else line for line in lines[1:]]
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
    else:
        path.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
