"""Argument-parsing helpers shared by the command modules: one-line errors, exit code 2."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(2, f"npusim: error: {self.prog}: {message}\n")


def positive_int(flag: str):
    """An argparse type accepting integers >= 1 with a one-line message naming the flag."""
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {text!r}: not an integer (allowed: a positive integer)") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} = {v}: must be positive (allowed: >= 1)")
        return v
    return conv


def positive_float(flag: str):
    """An argparse type accepting numbers > 0."""
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {text!r}: not a number (allowed: a positive number)") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} = {text}: must be a finite positive number")
        return v
    return conv
