"""What every benchmark's command line shares: model flags, the output-file check, `error: ...`.

Bad input is refused before any model is loaded or any time is spent: one line `error: ...` on
stderr and exit status 2 (argparse does the same for what it checks itself).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from soo.core.cli import fail, non_negative_int, positive_int  # noqa: F401  (the benchmarks' imports)

# Where each benchmark's report goes unless --output_file says otherwise: results/ is git-ignored,
# so a run never touches docs/, which keeps only the reports committed on purpose (docs/benchmarks/README.md
# names the --output_file that reproduces each). Training steps, efficiency and peak memory share one.
REPORT_DIR = "results/benchmarks"
TRAINING_REPORT = f"{REPORT_DIR}/training.md"
GENERATION_REPORT = f"{REPORT_DIR}/generation.md"
EVALUATION_REPORT = f"{REPORT_DIR}/evaluation.md"
SCORING_REPORT = f"{REPORT_DIR}/scoring.md"
RL_REPORT = f"{REPORT_DIR}/rl.md"
GPU_REPORT = f"{REPORT_DIR}/gpu.md"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the training-step benchmarks: model, SOO layer, pairs per step."""
    parser.add_argument(
        "--model_name_or_path", default=None, help="model path or hub id (default: the embedded SmolLM2-135M)"
    )
    parser.add_argument(
        "--soo_layer",
        type=int,
        default=15,
        help="decoder layer whose self_attn.o_proj output the SOO term compares; "
        "negative counts from the end (default 15)",
    )
    parser.add_argument("--batch_pairs", type=positive_int, default=4, help="pairs per step, 2x rows (default 4)")


def add_output_file_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--output_file", default=default, help=f"markdown report, appended to (default {default}; empty to skip)"
    )


def output_file_error(path: str) -> int:
    """0 when `path` is empty (no report) or writable, else the bad-input status after one error line."""
    if not path:
        return 0
    try:
        check_output_file(path)
    except OSError as error:
        return fail(error)
    return 0


def check_output_file(path: str) -> None:
    """Make sure the report file can be written before the benchmark runs (its missing folders are
    created, as writing it would); raises OSError with a one-line message otherwise."""
    target = Path(path)
    if target.is_dir():
        raise OSError(f"cannot write the output file {target}: it is a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        raise OSError(f"cannot write the output file {target}: {error.strerror or error}{where}") from None
    try:  # a probe file in the same folder: os.access says yes to root even where writes fail
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise OSError(f"cannot write the output file {target}: {error.strerror or error}") from None
    if target.exists() and not os.access(target, os.W_OK):
        raise OSError(f"cannot write the output file {target}: permission denied")
