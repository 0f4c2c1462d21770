"""Benchmark: achieved FLOP/s of an SOO training step against the machine's fp32 matmul FLOP/s.

    python -m benchmarks.efficiency                   # SmolLM2-135M, layer 15, 4 pairs/step (~2 min)
    python -m benchmarks.efficiency --model_name_or_path /tmp/tiny --soo_layer 2 --repeats 1 --output_file ""  # smoke

FLOPs are counted on the step we actually run (ours, LM + SOO: forward and backward, LoRA on
q_proj/v_proj) with torch's FlopCounterMode, which counts the matmuls and attention kernels as
dispatched; elementwise work (norms, activations, softmax, the loss) is not counted, so the figure
is the useful matmul throughput. The machine's reference is a large fp32 matmul (--matmul_size,
2*n^3 FLOPs) timed in the same run. One step is then profiled (torch.profiler) and the report
lists the operators that take the most self CPU time: where the time that is not matmul goes.
Target: achieved / matmul >= 40%.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from benchmarks._cli import (
    TRAINING_REPORT,
    add_model_arguments,
    check_output_file,
    fail,
    non_negative_int,
    positive_int,
)
from benchmarks._machine import load_average, machine_info, matmul_flops_per_second
from benchmarks.training import build, make_steps
from soo.core.cli import CommandParser

TARGET = 0.40


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed steps and matmuls (default 5)")
    parser.add_argument(
        "--matmul_size", type=positive_int, default=2048, help="n of the n x n fp32 reference matmul (default 2048)"
    )
    parser.add_argument(
        "--top", type=non_negative_int, default=12, help="operators listed from the profile (default 12)"
    )
    parser.add_argument(
        "--output_file",
        default=TRAINING_REPORT,
        help=f"markdown report, appended to (default {TRAINING_REPORT}; empty to skip)",
    )
    args = parser.parse_args(argv)

    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from soo.core.modeling import ModelLoadError

    try:
        if args.output_file:
            check_output_file(args.output_file)
        model_path, tokenizer, model, trainer, batches = build(
            args.model_name_or_path, args.soo_layer, args.batch_pairs, 0
        )
    except (OSError, ModelLoadError, ValueError) as error:  # ValueError: e.g. a layer the model does not have
        return fail(error)
    step = make_steps(model, trainer, tokenizer.pad_token_id)["ours_lm_soo"]
    features = batches[0]

    step(features)  # warm-up
    model.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        step(features)
    step_flops = counter.get_total_flops()
    model.zero_grad(set_to_none=True)

    step_seconds, matmul_rates = [], []
    for _ in range(args.repeats):  # interleaved: both see the same machine state
        started = time.perf_counter()
        step(features)
        step_seconds.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
        matmul_rates += matmul_flops_per_second(args.matmul_size, 1)
    achieved = step_flops / statistics.median(step_seconds)
    peak = statistics.median(matmul_rates)
    ratio = achieved / peak

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step(features)
    model.zero_grad(set_to_none=True)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total_self = sum(event.self_cpu_time_total for event in events) or 1
    top = [
        (event.key, event.self_cpu_time_total / 1e6, event.self_cpu_time_total / total_self, event.count)
        for event in events[: args.top]
    ]

    table = [
        "| step FLOPs (counted) | step s (median) | achieved GFLOP/s | fp32 matmul GFLOP/s (median) | ratio | target |",
        "|---|---|---|---|---|---|",
        f"| {step_flops / 1e9:.1f} G | {statistics.median(step_seconds):.3f} | {achieved / 1e9:.1f} | {peak / 1e9:.1f} "
        f"| {ratio:.0%} | >= {TARGET:.0%}: {'met' if ratio >= TARGET else 'NOT met'} |",
        "",
        "| operator (profile of one step) | self CPU s | share | calls |",
        "|---|---|---|---|",
        *[f"| `{name}` | {seconds:.3f} | {share:.0%} | {count} |" for name, seconds, share, count in top],
    ]
    info = machine_info()
    if args.output_file:
        with Path(args.output_file).open("a", encoding="utf-8") as handle:
            handle.write(
                "\n## Efficiency against the machine\n\n"
                f"Command: `python -m benchmarks.efficiency {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()
                + f"; model `{model_path}`, layer {args.soo_layer}, {args.batch_pairs} pairs/step, fp32, "
                f"{args.repeats} steps and {args.matmul_size}x{args.matmul_size} matmuls interleaved; "
                f"{info['cpu']}, torch threads {info['torch_threads']}, torch {info['torch']}; load {load_average()}.\n\n"
                + "\n".join(table)
                + "\n"
            )
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
