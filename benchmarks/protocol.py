"""Benchmark: the whole evaluation protocol, wall time and peak RSS, per protocol.

    python -m benchmarks.protocol --adapters outputs/smollm2-135m-instruct-soo                # n = 250, forced choice
    python -m benchmarks.protocol --adapters outputs/smollm2-135m-instruct-soo --protocols forced_choice generation

Runs `evaluate.py --protocol P` (every scenario, both orders, base + the adapters, latent SOO and
the capability measures as evaluate.py does them) as a child process per protocol, in a fresh
output folder each (no generation cache), and reads each child's own peak RSS from `wait4`.
Targets on a 2-core CPU (the performance issue): forced choice <= 10 min, generation <= 30 min.
Prints a table; appends it to results/benchmarks/evaluation.md (--output_file; empty to skip;
docs/benchmarks/evaluation.md is the committed one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._cli import EVALUATION_REPORT, add_output_file_argument, fail, output_file_error, positive_int
from soo.core.cli import CommandParser

TARGET_MINUTES = {"forced_choice": 10, "generation": 30, "both": 40}
TARGET_N = 250  # the targets are for the paper's n; other n get no verdict


def run_protocol(protocol: str, adapters: list[str], n: int, extra: list[str]) -> dict:
    """Wall seconds, peak RSS (GB) and exit code of one evaluate.py run."""
    with tempfile.TemporaryDirectory(prefix="soo-protocol-") as out:
        command = [
            sys.executable,
            "evaluate.py",
            "--protocol",
            protocol,
            "--n",
            str(n),
            "--output_dir",
            out,
            *(["--adapters", *adapters] if adapters else []),
            *extra,
        ]
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "protocol": protocol,
        "wall_s": wall,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,
        "exit": child.returncode,
        "command": " ".join(
            ["python", *command[1:4], "--n", str(n), *(["--adapters", *adapters] if adapters else []), *extra]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapters", nargs="*", default=[], help="adapter folders evaluated beside the base model")
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=("forced_choice", "generation", "both"),
        default=["forced_choice"],
        help="protocols to time, one evaluate.py run each",
    )
    parser.add_argument("--n", type=positive_int, default=250, help="instances per scenario and order (default 250)")
    add_output_file_argument(parser, EVALUATION_REPORT)
    parser.add_argument("extra", nargs="*", help="extra evaluate.py flags (after --)")
    args = parser.parse_args(argv)
    if output_file_error(args.output_file):
        return 2
    missing = [adapter for adapter in args.adapters if not Path(adapter).is_dir()]
    if missing:
        return fail(f"adapter folder(s) not found: {', '.join(missing)}")
    rows = [run_protocol(protocol, args.adapters, args.n, args.extra) for protocol in args.protocols]
    table = ["| protocol | command | exit | wall min | peak RSS GB | target |", "|---|---|---|---|---|---|"]
    for row in rows:
        target = TARGET_MINUTES[row["protocol"]]
        if args.n != TARGET_N:
            verdict = f"n/a (target at n = {TARGET_N})"
        else:
            verdict = "met" if row["wall_s"] <= 60 * target and row["exit"] == 0 else "NOT met"
        table.append(
            f"| {row['protocol']} | `{row['command']}` | {row['exit']} | {row['wall_s'] / 60:.1f} | "
            f"{row['peak_rss_gb']:.2f} | <= {target} min: {verdict} |"
        )
    if args.output_file:
        with Path(args.output_file).open("a", encoding="utf-8") as handle:
            handle.write(
                f"\n## Whole evaluation protocol ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)\n\n"
                + "\n".join(table)
                + "\n"
            )
    print("\n".join(table))
    return max((row["exit"] for row in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
