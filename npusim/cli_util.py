"""Argument-parsing helpers shared by the command modules: one-line errors, exit code 2."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(2, f"npusim: error: {self.prog}: {message}\n")


def _positive(flag: str, cast, what: str):
    """An argparse type: ``cast(text)`` must be finite and > 0, else a one-line message naming the flag."""
    def conv(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {text!r}: not {what} (allowed: a positive {what.split()[-1]})") from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} = {text}: must be positive and finite (allowed: > 0)")
        return v
    return conv


def positive_int(flag: str):
    """An argparse type accepting integers >= 1."""
    return _positive(flag, int, "an integer")


def positive_float(flag: str):
    """An argparse type accepting finite numbers > 0."""
    return _positive(flag, float, "a number")
