"""Argument-parsing helpers shared by the command modules: one-line errors, exit code 2."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        # argparse quotes the whole bad value ("invalid int value: '...'"): keep the line short.
        message = " ".join(str(message).split())
        if len(message) > 300:
            message = message[:297] + "..."
        self.exit(2, f"npusim: error: {self.prog}: {message}\n")


def _positive(flag: str, cast, what: str, hi=None):
    """An argparse type: ``cast(text)`` must be finite and > 0 (and <= ``hi``), else a one-line message
    naming the flag and a short prefix of the text (integers: at most 18 digits)."""
    def conv(text: str):
        from npusim.config.errors import shown
        from npusim.config.policy import MAX_INT_DIGITS

        if cast is int and sum(c.isdigit() for c in text) > MAX_INT_DIGITS:
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: integer too long "
                                             f"(allowed: at most {MAX_INT_DIGITS} digits)")
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: not {what} "
                                             f"(allowed: a positive {what.split()[-1]})") from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: must be positive and finite (allowed: > 0)")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: too large (allowed: at most {hi:,})")
        return v
    return conv


def positive_int(flag: str, hi: int | None = None):
    """An argparse type accepting integers >= 1 (and <= ``hi``)."""
    return _positive(flag, int, "an integer", hi)


def positive_float(flag: str):
    """An argparse type accepting finite numbers > 0."""
    return _positive(flag, float, "a number")


def int_in(flag: str, lo: int, hi: int):
    """An argparse type accepting integers in ``lo..hi`` (at most 18 digits)."""
    def conv(text: str):
        from npusim.config.errors import ConfigError
        from npusim.config.policy import int_text

        try:
            return int_text(text, flag, flag, lo, hi)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None
    return conv


def plan_text(flag: str = "--plan"):
    """An argparse type for a plan flag: refuses an empty or blank value (omit the flag for the
    default plan); keys and values are checked by ``parse_plan`` when the command runs."""
    def conv(text: str):
        from npusim.config.errors import shown

        if not str(text).replace(",", " ").strip():
            raise argparse.ArgumentTypeError(f"{flag} = {shown(text)}: empty plan "
                                             "(allowed: key=value pairs such as tp=8,pp=2; omit the flag for the default)")
        return text
    return conv
