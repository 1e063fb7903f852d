"""Command line: load the three inputs, call the core, write the result. Imports stay lazy.

Each command lives in ``npusim/commands/NAME.py`` with ``register(subparsers)`` (which sets
``func``) and ``run(args) -> int``; add a command by adding its module name to ``COMMANDS``.
"""
from __future__ import annotations

import importlib
import sys

from npusim.cli_util import Parser

COMMANDS = ["simulate", "validate", "calibrate", "catalog", "plot", "trace", "moe", "sweep", "plan", "microbench", "compare", "serve"]


def build_parser() -> Parser:
    """The ``npusim`` argument parser."""
    parser = Parser(prog="npusim", description="Performance simulator for LLM training and inference on Ascend NPUs and GPUs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"npusim.commands.{name}")
        before = set(sub.choices)
        mod.register(sub)
        for new in set(sub.choices) - before:
            sub.choices[new].set_defaults(func=mod.run)
    return parser


def cli_reference() -> str:
    """The CLI reference page (docs/cli.md): every command's --help, generated from the parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    parts = ["# CLI reference", "",
             "Generated from the argument parser: `python -c \"from npusim.cli import cli_reference; "
             "print(cli_reference(), end='')\" > docs/cli.md` (a test keeps it current).", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in sorted(sub.choices.items()):
        parts += [f"## npusim {name}", "", "```text", p.format_help().rstrip(), "```", ""]
        nested = [a for a in p._actions if a.choices and isinstance(a.choices, dict)]
        for action in nested:
            for child, cp in sorted(action.choices.items()):
                parts += [f"### npusim {name} {child}", "", "```text", cp.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``npusim`` console script."""
    args = build_parser().parse_args(argv)
    from npusim.config.errors import ConfigError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"npusim: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:
        if e.filename is None:
            raise
        # Backstop of the input policy: a file a reader opened without its own check (permissions,
        # a folder where a file is expected) is one line, not a traceback.
        from npusim.config.errors import PathText

        err = ConfigError(str(e.filename), "<file>", PathText(e.filename), f"cannot open: {e.strerror or type(e).__name__}")
        print(f"npusim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("npusim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
