"""What every benchmark's command line shares: number types, the output-file check, `error: ...`.

Bad input is refused before any model is loaded or any time is spent: one line `error: ...` on
stderr and exit status 2 (argparse does the same for what it checks itself).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def fail(message) -> int:
    """Print `error: message` on stderr; the exit status for bad input."""
    print(f"error: {message}", file=sys.stderr)
    return 2


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
