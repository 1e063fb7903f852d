"""``npusim validate RUNS.csv --report DIR``: a Markdown report of the analysed rows.

``DIR/report.md`` holds the summary, the per-row table (metric the row gives, error, MFU in its
convention, peak memory, status), the measured-vs-predicted plot ``DIR/measured_vs_predicted.png``
(one labelled point per row, training rows as step times) and, per row, the parts of the predicted
step that would have to change to explain the gap (``npusim.validate.analysis.explain_gap``).
"""
from __future__ import annotations

from pathlib import Path

from npusim.validate.analysis import PART_LABELS, time_view

PLOT_NAME = "measured_vs_predicted.png"
REPORT_NAME = "report.md"


def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def _mfu(m) -> str:
    if not m:
        return "-"
    return f"{100 * m['measured']:.1f} / {100 * m['predicted']:.1f} ({m['convention']})"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _summary(result: dict, name: str) -> list[str]:
    s = result["summary"]
    return [f"# npusim validate: {name}", "",
            f"{len(result['rows'])} rows; {s['n']} with a prediction (of which {s.get('does_not_fit', 0)} "
            f"do not fit in memory), {s['skipped']} skipped. On each row's own metric: MAPE "
            f"{s['mape_pct'] if s['mape_pct'] is not None else 'n/a'} %, largest error "
            f"{s['max_ape_pct'] if s['max_ape_pct'] is not None else 'n/a'} %, Kendall tau "
            f"{s['kendall_tau'] if s['kendall_tau'] is not None else 'n/a'}.", ""]


def _table(result: dict) -> list[str]:
    lines = ["| id | hardware | model | metric | measured | predicted | error % | MFU % measured / predicted | "
             "peak memory GB | status |", "|---|---|---|---|---:|---:|---:|---|---:|---|"]
    for r in result["rows"]:
        err = "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f}"
        mem = r.get("memory_GB")
        mem_s = f"{mem['peak']:.1f} of {mem['capacity']:.1f}" if mem else "-"
        status = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["id"], r.get("hardware", "-"), r.get("model", "-"), r["metric"] or "-", _num(r["measured"]),
            _num(r["predicted"]), err, _mfu(r.get("mfu")), mem_s, status)) + " |")
    return lines + [""]


def _row_section(r: dict) -> list[str]:
    err = "" if r["error_pct"] is None else f", {r['error_pct']:+.1f} %"
    out = [f"### {r['id']} ({r['status']}{err})", ""]
    if r.get("reason"):
        out += [f"{r['status']}: {r['reason']}.", ""]
    gap = r.get("gap")
    if gap is None:
        if r["status"] in ("ok", "does_not_fit"):
            out += [f"{r['metric']}: measured {_num(r['measured'])}, predicted {_num(r['predicted'])} "
                    "(no step breakdown for this workload).", ""]
        return out
    text = gap["text"][0].upper() + gap["text"][1:]
    if gap["parts"]:
        text += ". To explain it alone, one of these parts of the prediction would have to change:"
    out += [text + ("" if gap["parts"] else "."), ""]
    out += [f"- {p['text']}" for p in gap["parts"]]
    if gap["parts"] and gap["gap_s"] > 0:
        out.append("- or the run spends the time on work npusim does not model (host overhead, data loading, "
                   "stragglers, synchronisation)")
    bd = r.get("breakdown_s") or {}
    total = sum(bd.values()) or 1.0
    parts = sorted(((v, k) for k, v in bd.items() if v > 1e-9), reverse=True)
    out += ["", "| part of the predicted step | s | % |", "|---|---:|---:|"]
    out += [f"| {PART_LABELS.get(k, k)} | {v:.4g} | {100 * v / total:.1f} |" for v, k in parts]
    return out + [""]


def render_report(result: dict, name: str, plot_name: str | None = PLOT_NAME) -> str:
    """The Markdown text of the report (``plot_name``: the image beside it, or None)."""
    lines = _summary(result, name) + _table(result)
    if plot_name:
        lines += [f"![measured vs predicted]({plot_name})", "",
                  "One labelled point per row with a prediction: training rows as step times (a measured tokens/s "
                  "or MFU is converted with the row's tokens per step and FLOP convention), prefill and decode "
                  "rows as TTFT / TPOT; y = x and a ±10 % band.", ""]
    lines += ["## Where the gaps come from", "",
              "Gap = measured − predicted step. Each listed part is one of the largest of the predicted step, with "
              "the change it alone would need to close the gap.", ""]
    for r in result["rows"]:
        lines += _row_section(r)
    return "\n".join(lines).rstrip() + "\n"


def write_report(result: dict, out_dir, name: str) -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/measured_vs_predicted.png`` (folder created when missing)."""
    from npusim.outputs import write_text
    from npusim.report.plots import predicted_vs_measured, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    view = time_view(result)
    plot = None
    if view["rows"]:
        save_figure(predicted_vs_measured(view, annotate=True, title=f"Measured vs predicted: {name}"), out / PLOT_NAME)
        plot = PLOT_NAME
    return write_text(out / REPORT_NAME, render_report(result, name, plot))
