"""Helpers shared by the benchmark scripts: Markdown tables and a one-line machine description."""
from __future__ import annotations

import os
import platform


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (also readable as plain text)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def machine() -> str:
    """One line describing this machine."""
    return (f"{platform.platform()}, {platform.machine()}, Python {platform.python_version()} "
            f"({platform.python_implementation()}), os.cpu_count() = {os.cpu_count()}")


def merge_plan(*parts: str) -> str:
    """Plan strings joined with later keys overriding earlier ones (``--plan`` itself refuses a
    repeated key)."""
    out: dict[str, str] = {}
    for part in parts:
        for item in part.split(","):
            if item.strip():
                k, _, v = item.partition("=")
                out[k.strip()] = v.strip()
    return ",".join(f"{k}={v}" for k, v in out.items())


def write_section(doc, begin: str, end: str, text: str) -> None:
    """Replace what stands between the ``begin`` and ``end`` markers of the Markdown file ``doc``."""
    body = doc.read_text()
    head, rest = body.split(begin)
    _, tail = rest.split(end)
    doc.write_text(head + begin + "\n" + text + "\n" + end + tail)
