"""`npusim validate`: measured vs predicted on run records (table, MFU, memory fit, report, plot, parts)."""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("validate", help="predict every row of a run-record CSV and compare")
    p.add_argument("runs", nargs="?", default=None,
                   help="run-record CSV (format: docs/formats.md; `--template` prints one to fill in)")
    p.add_argument("--template", action="store_true", help="print a minimal run-record CSV to fill in, and exit")
    p.add_argument("--json", action="store_true",
                   help="rows with id, status, metric, measured, predicted, error_pct, step_time_s, mfu, memory_GB, "
                        "breakdown_s, gap; and the summary")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write DIR/report.md: the table, the measured-vs-predicted plot "
                        "(DIR/measured_vs_predicted.png, labelled points) and, per row, the parts of the step "
                        "that would have to change to explain the gap")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also draw predicted vs measured (one point per row, ±10 %% band); .png, .svg or .pdf")
    p.add_argument("--by", choices=["component"], default=None,
                   help="component: per row, the predicted step time by named part (with --breakdown: next to "
                        "the measured parts, largest gap first)")
    p.add_argument("--breakdown", default=None, metavar="FILE.csv",
                   help="measured parts per run: CSV with id,part,measured_s (docs/calibration.md); "
                        "needs --by component")


def _check_flags(args) -> None:
    """Refuse bad flag combinations and unusable output paths before any work."""
    from npusim.config.errors import ConfigError

    if args.runs is None:
        raise ConfigError("validate", "runs", None, "the following arguments are required: runs",
                          "a run-record CSV, or --template")
    if args.breakdown and args.by != "component":
        raise ConfigError("--breakdown", "breakdown", args.breakdown, "needs --by component", "--by component")
    if args.plot is not None:
        from npusim.outputs import check_file
        from npusim.report.plots import image_format

        check_file(args.plot, "--plot")
        image_format(args.plot)
    if args.report is not None:
        from npusim.outputs import check_dir

        check_dir(args.report, "--report")


def run(args) -> int:
    """Predict every row of a run-record file; print the table (and parts), write the report and plot."""
    from npusim.validate.runs import TEMPLATE, read_runs

    if args.template:
        print(TEMPLATE, end="")
        return 0
    _check_flags(args)
    from npusim.validate.analysis import analyse_runs, time_view
    from npusim.validate.compare import format_table

    records = read_runs(args.runs)
    measured = None
    if args.breakdown:
        from npusim.validate.components import read_breakdown

        measured = read_breakdown(args.breakdown, {r.id for r in records})
    result, results = analyse_runs(records)
    comps = None
    if args.by == "component":
        from npusim.validate.components import components

        # rows that do not fit still have a predicted step to break down
        as_ok = {"rows": [{**r, "status": "ok"} if r["status"] == "does_not_fit" else r for r in result["rows"]]}
        comps = components(as_ok, results, measured)
    if args.plot is not None:
        from npusim.report.plots import predicted_vs_measured, save_figure

        save_figure(predicted_vs_measured(time_view(result), annotate=True), args.plot)
    report = None
    if args.report is not None:
        from npusim.validate.report import write_report

        report = write_report(result, args.report, Path(args.runs).name)
    if args.json:
        print(json.dumps({**result, "components": comps} if comps is not None else result, sort_keys=True))
        return 0
    print(format_table(result))
    if comps is not None:
        from npusim.validate.components import format_components

        print()
        print(format_components(result, comps))
    for path in (args.plot, report):
        if path is not None:
            print(f"wrote {path}")
    return 0
