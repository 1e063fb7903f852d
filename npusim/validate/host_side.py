"""The host side of the single-device training steps (``training_steps_host.csv``, written by
``npusim microbench --steps``): how long each step took to issue, how many operators it dispatched,
and what running the experts the dropless way cost against the same shape run as batched GEMMs.

npusim prices kernels and collectives; it has no host. These figures say whether a measured step was
host-bound (issued for about as long as it ran) and, from the dropless / batched pair of one shape, how
much a dropless MoE layer costs beyond its kernels: the data a host-dispatch model would be fitted to.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Optional

from npusim.config.errors import ConfigError

DROPLESS_SUFFIX = "-dropless"
"""Model-name suffix of a dropless step whose batched twin has the same name without it."""


@dataclass(frozen=True)
class HostRow:
    """One line of training_steps_host.csv."""

    id: str
    step_s: float
    host_issue_s: float
    dispatched_ops: int
    host_syncs_per_step: int

    @property
    def issue_share(self) -> float:
        """Issue time over step time: near 1 when the host, not the device, set the pace."""
        return self.host_issue_s / self.step_s

    @property
    def issue_us_per_op(self) -> float:
        """Host issue time per dispatched operator (an upper bound on the host cost of one operator)."""
        return self.host_issue_s / self.dispatched_ops * 1e6 if self.dispatched_ops else float("nan")


HOST_COLUMNS = tuple(f.name for f in fields(HostRow))
"""Columns of training_steps_host.csv."""


def read_host_csv(path: str | Path) -> list[HostRow]:
    """Rows of a training_steps_host.csv; a missing or malformed cell is a ConfigError naming file, line,
    column and value."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            values = {}
            for fld in fields(HostRow):
                cell = row.get(fld.name)
                try:
                    values[fld.name] = cell if fld.type == "str" else (float if fld.type == "float" else int)(cell)
                except (TypeError, ValueError):
                    raise ConfigError(f"{path}:{line}", fld.name, cell, f"not a {fld.type}",
                                      f"columns {', '.join(HOST_COLUMNS)}") from None
            out.append(HostRow(**values))
    return out


@dataclass(frozen=True)
class DroplessPair:
    """A dropless step and its batched twin: the measured and predicted extra time of running dropless."""

    dropless_id: str
    batched_id: str
    measured_extra_s: float
    predicted_extra_s: Optional[float]
    syncs_per_step: int
    extra_ops: int

    @property
    def unpriced_s(self) -> Optional[float]:
        """Measured extra time npusim does not predict."""
        return None if self.predicted_extra_s is None else self.measured_extra_s - self.predicted_extra_s

    @property
    def unpriced_per_sync_s(self) -> Optional[float]:
        """The unpriced time per MoE layer forward (one host synchronisation each)."""
        u = self.unpriced_s
        return None if u is None or not self.syncs_per_step else u / self.syncs_per_step


def _model_name(row_id: str) -> str:
    """``V907-moe-5.0b-128e-dropless`` -> ``moe-5.0b-128e-dropless``."""
    return row_id.split("-", 1)[1] if "-" in row_id else row_id


def dropless_pairs(rows: Iterable[HostRow], predicted_s: dict[str, float]) -> list[DroplessPair]:
    """Each dropless row with the batched row of the same model name (``predicted_s``: predicted step by id;
    a row without a prediction gives ``predicted_extra_s`` None)."""
    rows = list(rows)
    by_name = {_model_name(r.id): r for r in rows}
    out = []
    for r in rows:
        name = _model_name(r.id)
        twin = by_name.get(name[: -len(DROPLESS_SUFFIX)]) if name.endswith(DROPLESS_SUFFIX) else None
        if twin is None:
            continue
        pred = (predicted_s[r.id] - predicted_s[twin.id]
                if r.id in predicted_s and twin.id in predicted_s else None)
        out.append(DroplessPair(r.id, twin.id, r.step_s - twin.step_s, pred, r.host_syncs_per_step,
                                r.dispatched_ops - twin.dispatched_ops))
    return out
