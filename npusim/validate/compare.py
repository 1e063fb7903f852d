"""Compare predictions with the measured metric of run records: per-row error, MAPE, Kendall tau.

``validate_runs(records, predict)`` never crashes on a row: a prediction that raises (not modelled
yet, bad config, any other exception) or that is not a positive finite number makes the row
``skipped`` with a one-line reason; the summary is computed over the ``ok`` rows only.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from npusim.validate.schema import RunRecord


def _one_line(exc: BaseException) -> str:
    """``str(exc)`` on one line (the exception type when the message is empty)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _tau_b_simple(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall tau-b by counting pairs (O(n^2)); None when either side is constant."""
    n = len(x)
    concordant = discordant = tie_x = tie_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue  # tied in both: counts in neither denominator term
            if dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    n0 = concordant + discordant
    denom = math.sqrt((n0 + tie_x) * (n0 + tie_y))
    if denom == 0:
        return None
    return (concordant - discordant) / denom


SCIPY_TAU_FROM = 2000
"""Sequences at least this long use scipy's O(n log n) tau-b; shorter ones count pairs (importing
scipy.stats alone takes about 2 s, more than counting the pairs of a sweep's 100 full-tier points)."""


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall tau-b of two sequences, or None when undefined (n < 2, constant)."""
    if len(x) < 2:
        return None
    if len(x) < SCIPY_TAU_FROM:
        return _tau_b_simple(x, y)
    try:
        import warnings

        from scipy.stats import kendalltau
    except ImportError:
        return _tau_b_simple(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = kendalltau(x, y)  # variant 'b' is the default
    tau = float(res[0])
    return None if math.isnan(tau) else tau


def validate_runs(records: Iterable["RunRecord"], predict: Callable[["RunRecord"], float]) -> dict:
    """Predict every record's metric and compare it with the measurement.

    Returns ``{"rows": [{"id", "metric", "measured", "predicted", "error_pct", "status", "reason"}],
    "summary": {"n", "mape_pct", "max_ape_pct", "kendall_tau", "skipped"}}`` where
    ``error_pct = 100*(predicted-measured)/measured`` (signed, 2 dp), ``n`` counts the ok rows and
    MAPE / max APE / tau-b are over them (None when there are none, tau None when n < 2).
    """
    from npusim.validate.convert import measured_metric

    rows: list[dict[str, Any]] = []
    measured_ok: list[float] = []
    predicted_ok: list[float] = []
    ape: list[float] = []
    for rec in records:
        row: dict[str, Any] = {"id": rec.id, "metric": None, "measured": None, "predicted": None,
                               "error_pct": None, "status": "skipped", "reason": None}
        try:
            metric, measured = measured_metric(rec)
            row["metric"], row["measured"] = metric, measured
            value = predict(rec)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)  # numpy scalars
                except (TypeError, ValueError):
                    raise TypeError(f"prediction is not a number: {value!r}") from None
            value = float(value)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"prediction is not a positive finite number: {value!r}")
        except Exception as exc:  # noqa: BLE001 - a bad row must never stop the comparison
            row["reason"] = _one_line(exc)
            rows.append(row)
            continue
        err = 100.0 * (value - measured) / measured
        row.update(predicted=value, error_pct=round(err, 2), status="ok")
        rows.append(row)
        measured_ok.append(measured)
        predicted_ok.append(value)
        ape.append(abs(err))
    n = len(ape)
    tau = kendall_tau(measured_ok, predicted_ok) if n >= 2 else None
    summary = {
        "n": n,
        "mape_pct": round(sum(ape) / n, 2) if n else None,
        "max_ape_pct": round(max(ape), 2) if n else None,
        "kendall_tau": round(tau, 3) if tau is not None else None,
        "skipped": sum(1 for r in rows if r["status"] == "skipped"),
    }
    return {"rows": rows, "summary": summary}


def _num(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _fmt_summary_value(x: Optional[float], suffix: str = "") -> str:
    return "n/a" if x is None else f"{x}{suffix}"


def _mfu_cells(r: dict) -> tuple[str, str]:
    m = r.get("mfu")
    if not m:
        return "-", "-"
    return f"{100 * m['measured']:.1f}", f"{100 * m['predicted']:.1f} {m['convention']}"


def format_table(result: dict) -> str:
    """An aligned text table of ``validate_runs`` output, with a summary line at the end. Rows analysed
    by ``npusim.validate.analysis`` add MFU columns (in % and the row's convention)."""
    with_mfu = any("mfu" in r for r in result["rows"])
    head = ("id", "metric", "measured", "predicted", "error %") + (("MFU meas %", "MFU pred %") if with_mfu else ()) \
        + ("status",)
    body = []
    for r in result["rows"]:
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.2f}"
        status = r["status"] if not r.get("reason") else f"{r['status']}: {r['reason']}"
        cells = (str(r["id"]), r["metric"] or "-", _num(r["measured"]), _num(r["predicted"]), err)
        body.append(cells + (_mfu_cells(r) if with_mfu else ()) + (status,))
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
    right = (False, False, True, True, True, True, False)

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts + [cells[-1]]).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths) + "  " + "-" * len(head[-1])]
    out += [line(row) for row in body]
    s = result["summary"]
    out.append(f"n={s['n']} MAPE={_fmt_summary_value(s['mape_pct'], '%')} "
               f"max={_fmt_summary_value(s['max_ape_pct'], '%')} tau={_fmt_summary_value(s['kendall_tau'])} "
               + (f"does_not_fit={s['does_not_fit']} " if "does_not_fit" in s else "")
               + f"skipped={s['skipped']}")
    return "\n".join(out)
