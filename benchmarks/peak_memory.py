"""Benchmark: peak resident memory (RSS) of the README's main training command.

    python -m benchmarks.peak_memory                 # finetuning.py --config configs/smollm2-135m-instruct.yaml (~3 min)
    python -m benchmarks.peak_memory -- --max_steps 5 --output_dir /tmp/pm   # extra finetuning.py flags after --

Runs the command as a child process and reads the child's peak RSS from the kernel
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`: the largest RSS any waited-for child reached), so the
figure includes everything the run loads (model, tokenizer, data, evaluation before and after).
Target: at most 3 GB. Prints a one-row table last; appends it to results/benchmarks/training.md
(--output_file; empty to skip; docs/benchmarks/training.md is the committed one). finetuning.py's
own errors (bad extra flags) come from the child, with its exit status.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._cli import TRAINING_REPORT, add_output_file_argument, output_file_error
from soo.core.cli import CommandParser

README_MAIN_COMMAND = ["finetuning.py", "--config", "configs/smollm2-135m-instruct.yaml"]
TARGET_GB = 3.0


def measure(extra: list[str]) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit code) of the README command plus `extra` flags."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, *README_MAIN_COMMAND, *extra], stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return peak_kib * 1024 / 1e9, wall, completed.returncode


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_output_file_argument(parser, TRAINING_REPORT)
    parser.add_argument("extra", nargs="*", help="extra finetuning.py flags (after --)")
    args = parser.parse_args(argv)
    if output_file_error(args.output_file):
        return 2
    peak_gb, wall, code = measure(args.extra)
    command = "python " + " ".join(README_MAIN_COMMAND + args.extra)
    verdict = "met" if peak_gb <= TARGET_GB and code == 0 else "NOT met"
    table = [
        "| command | exit | wall s | peak RSS GB | target |",
        "|---|---|---|---|---|",
        f"| `{command}` | {code} | {wall:.0f} | {peak_gb:.2f} | <= {TARGET_GB:g} GB: {verdict} |",
    ]
    if args.output_file:
        with Path(args.output_file).open("a", encoding="utf-8") as handle:
            handle.write(
                "\n## Peak memory of the README's main command\n\n"
                "Command: `python -m benchmarks.peak_memory` (getrusage of the child process).\n\n"
                + "\n".join(table)
                + "\n"
            )
    print("\n".join(table))
    return 0 if code == 0 else code


if __name__ == "__main__":
    sys.exit(main())
