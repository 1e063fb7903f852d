"""`npusim validate`: measured vs predicted on run records (table, plot, per-part breakdown)."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("validate", help="predict every row of a run-record CSV and compare")
    p.add_argument("runs", help="run-record CSV (schema: docs/formats.md)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="also draw predicted vs measured (one point per row, ±10 %% band); .png, .svg or .pdf")
    p.add_argument("--by", choices=["component"], default=None,
                   help="component: per row, the predicted step time by named part (with --breakdown: next to "
                        "the measured parts, largest gap first)")
    p.add_argument("--breakdown", default=None, metavar="FILE.csv",
                   help="measured parts per run: CSV with id,part,measured_s (docs/calibration.md); "
                        "needs --by component")


def run(args) -> int:
    """Predict every row of a run-record file; print the table (and parts), draw the plot."""
    from npusim.config.errors import ConfigError
    from npusim.validate.compare import format_table, validate_runs
    from npusim.validate.runs import read_runs

    if args.breakdown and args.by != "component":
        raise ConfigError("--breakdown", "breakdown", args.breakdown, "needs --by component", "--by component")
    if args.plot is not None:
        from npusim.outputs import check_file
        from npusim.report.plots import image_format

        check_file(args.plot, "--plot")
        image_format(args.plot)
    records = read_runs(args.runs)
    measured = None
    if args.breakdown:
        from npusim.validate.components import read_breakdown

        measured = read_breakdown(args.breakdown, {r.id for r in records})
    if args.by == "component":
        from npusim.validate.components import RecordingPredictor, components, format_components

        predict = RecordingPredictor()
        result = validate_runs(records, predict)
        comps = components(result, predict.results, measured)
    else:
        from npusim.validate.predict import predict_record

        result, comps = validate_runs(records, predict_record), None
    if args.plot is not None:
        from npusim.report.plots import predicted_vs_measured, save_figure

        save_figure(predicted_vs_measured(result), args.plot)
    if args.json:
        print(json.dumps({**result, "components": comps} if comps is not None else result, sort_keys=True))
        return 0
    print(format_table(result))
    if comps is not None:
        print()
        print(format_components(result, comps))
    if args.plot is not None:
        print(f"wrote {args.plot}")
    return 0
