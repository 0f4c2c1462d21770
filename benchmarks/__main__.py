"""All benchmarks, one command: python -m benchmarks   (about 45 min on a 2-core CPU; not part of CI)

    python -m benchmarks                 # training steps, efficiency, peak memory, then batched generation
    python -m benchmarks --skip_generation   # the ~12 min without the generation benchmark

Each part prints its table and writes its report: results/benchmarks/training.md (training steps,
replaced; efficiency and peak memory appended) and results/benchmarks/generation.md (git-ignored;
docs/benchmarks/README.md says which --output_file updates the committed reports in docs/). Run a part
alone with `python -m benchmarks.training`, `.efficiency`, `.peak_memory` or `.generation` (see
each module's docstring for its options).
"""

from __future__ import annotations

import sys

from benchmarks import efficiency, generation, peak_memory, training
from soo.core.cli import CommandParser


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--skip_generation", action="store_true", help="skip the batched generation benchmark, the longest part"
    )
    args = parser.parse_args(argv)
    parts = [
        ("training steps", training.main, []),
        ("efficiency", efficiency.main, []),
        ("peak memory", peak_memory.main, []),
    ]
    if not args.skip_generation:
        parts.append(("batched generation", generation.main, []))
    for title, run, part_argv in parts:
        print(f"\n===== {title} =====", flush=True)
        code = run(part_argv)
        if code:
            print(f"{title}: exit {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
