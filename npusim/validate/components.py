"""Measured vs predicted step time per named part (``npusim validate --by component``).

The run-record schema has no breakdown columns, so a measured breakdown comes in a companion CSV
with the columns ``id,part,measured_s``: one row per run record id and named part of the step
(``part`` one of ``npusim.cost.passes.PART_NAMES``: compute, recompute, tp_comm, cp_comm, ep_comm,
pp_comm, dp_comm, bubble, imbalance, optimizer, other), ``measured_s`` in seconds. A run may list any
subset of the parts. ``read_breakdown`` checks every cell and raises a one-line ConfigError naming
``FILE:LINE``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from npusim.config.errors import ConfigError, did_you_mean

BREAKDOWN_COLUMNS = ("id", "part", "measured_s")
"""Columns of the measured-breakdown CSV."""
MIN_PART_S = 1e-9
"""Predicted parts at or below this (rounding residues of the named sum) are not listed unless measured."""


class RecordingPredictor:
    """``predict(rec)`` for ``validate_runs`` (same metric as ``predict_record``) that keeps each row's
    simulated Result, so its ``breakdown_s`` can be shown next to the measurement."""

    def __init__(self):
        """Start with no kept Results."""
        self.results: dict[str, object] = {}

    def __call__(self, rec) -> float:
        """Simulate the row, keep the Result, return its predicted metric (step time, TTFT or TPOT)."""
        from npusim.validate.predict import simulate_record, simulate_serving_record

        if rec.workload == "train":
            res = simulate_record(rec)
            value = res.step_time_s
        else:
            res = simulate_serving_record(rec)
            value = res.ttft_s if rec.workload == "prefill" else res.tpot_s
        self.results[rec.id] = res
        return value


def read_breakdown(path: str | Path, ids: set[str] | None = None) -> dict[str, dict[str, float]]:
    """``{run id: {part: measured seconds}}`` from a breakdown CSV; ``ids`` (when given) are the run ids
    the rows may name."""
    from npusim.cost.passes import PART_NAMES

    p = Path(path)
    if not p.is_file():
        raise ConfigError("--breakdown", "breakdown", str(path), "file not found", "a CSV with id,part,measured_s")
    with p.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in BREAKDOWN_COLUMNS if c not in cols]
        if missing:
            raise ConfigError(f"{p}:1", missing[0], None, "missing column", ", ".join(BREAKDOWN_COLUMNS))
        out: dict[str, dict[str, float]] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{p}:{line}"
            rid, part, text = (str(row.get(c) or "").strip() for c in BREAKDOWN_COLUMNS)
            if ids is not None and rid not in ids:
                raise ConfigError(where, "id", rid, "not a run of the run-record file" + did_you_mean(rid, sorted(ids)))
            if part not in PART_NAMES:
                raise ConfigError(where, "part", part, "unknown part" + did_you_mean(part, list(PART_NAMES)),
                                  ", ".join(PART_NAMES))
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(where, "measured_s", text, "not a number", "seconds >= 0") from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError(where, "measured_s", value, "must be a finite non-negative number", "seconds >= 0")
            if part in out.setdefault(rid, {}):
                raise ConfigError(where, "part", part, f"given twice for run {rid}", "one row per id and part")
            out[rid][part] = value
    return out


def component_rows(predicted: dict[str, float], measured: dict[str, float] | None) -> list[dict]:
    """Rows ``{part, predicted_s, measured_s, gap_s, gap_pct}`` of one run: measured parts first by
    largest absolute gap (gap = predicted - measured), then the other predicted parts, largest first."""
    measured = measured or {}
    rows = []
    for part in sorted(set(measured) | {k for k, v in predicted.items() if v > MIN_PART_S}):
        pred = predicted.get(part, 0.0)
        meas = measured.get(part)
        gap = None if meas is None else pred - meas
        rows.append({"part": part, "predicted_s": pred, "measured_s": meas, "gap_s": gap,
                     "gap_pct": round(100.0 * gap / meas, 1) if gap is not None and meas > 0 else None})
    return sorted(rows, key=lambda r: (r["gap_s"] is None, -abs(r["gap_s"] or 0.0), -r["predicted_s"]))


def components(result: dict, results: dict, measured: dict[str, dict[str, float]] | None) -> dict[str, list[dict]]:
    """``{run id: component_rows}`` for every ok row of ``validate_runs`` output with a kept Result."""
    out = {}
    for r in result["rows"]:
        res = results.get(r["id"])
        if r["status"] == "ok" and res is not None:
            out[r["id"]] = component_rows(res.breakdown_s, (measured or {}).get(r["id"]))
    return out


def _fmt(x: float | None, spec: str = ".4g") -> str:
    """A number, or '-' for None."""
    return "-" if x is None else format(x, spec)


def format_components(result: dict, comps: dict[str, list[dict]]) -> str:
    """Per run, its measured and predicted metric, then the named parts of the predicted step with the
    measured ones and the gap."""
    lines = []
    for r in result["rows"]:
        if r["id"] not in comps:
            lines.append(f"{r['id']}: {r['status']}" + (f": {r['reason']}" if r.get("reason") else ""))
            continue
        lines.append(f"{r['id']}: {r['metric']} measured {_fmt(r['measured'])} predicted {_fmt(r['predicted'])} "
                     f"({r['error_pct']:+.2f} %)")
        head = ("part", "measured s", "predicted s", "gap s", "gap %")
        body = [(c["part"], _fmt(c["measured_s"]), _fmt(c["predicted_s"]), _fmt(c["gap_s"], "+.4g"),
                 _fmt(c["gap_pct"], "+.1f")) for c in comps[r["id"]]]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        for x in [head, *body]:
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(x, widths))))
    return "\n".join(lines)
