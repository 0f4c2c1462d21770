"""Command-line helpers every entry point shares: number types for argparse, the error line.

Bad input is answered with one line `error: ...` on stderr and exit status 2 (argparse's own
status for what it checks itself), before any model is loaded.
"""

from __future__ import annotations

import argparse
import sys


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


def _float_checked(minimum: float, allow_equal: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value != value or value < minimum or (value == minimum and not allow_equal):
            raise argparse.ArgumentTypeError(f"must be {'at least' if allow_equal else 'above'} {minimum:g}, got {text}")
        return value

    return parse


positive_float = _float_checked(0.0, allow_equal=False)
non_negative_float = _float_checked(0.0, allow_equal=True)


def fail(message) -> int:
    """Print `error: message` on stderr; return the exit status for bad input."""
    print(f"error: {message}", file=sys.stderr)
    return 2
