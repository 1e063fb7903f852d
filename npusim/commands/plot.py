"""`npusim plot KIND`: draw a figure (PNG, SVG or PDF by the suffix of --out)."""
from __future__ import annotations

from npusim.cli_util import Parser, plan_text

SWEEP_COLUMNS = {"sweep": ("mfu", "tokens_per_s"), "heatmap": ("tp", "pp")}


def register(sub) -> None:
    """Add this command's parser."""
    from npusim.commands.trace import simulation_flags

    p = sub.add_parser("plot", help="draw a figure: breakdown, gantt, memory, validate, sweep, heatmap",
                       description="Draw a figure; the format follows the suffix of --out (docs/plots.md).")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=Parser)
    helps = {"breakdown": "stacked step-time bars of several --plan values",
             "gantt": "pipeline schedule of one simulation (ranks x time)",
             "memory": "memory per pipeline rank against HBM capacity"}
    for kind, text in helps.items():
        # A fresh parent each time: 'resolve' (breakdown's repeatable --plan) edits the shared actions.
        k = kinds.add_parser(kind, parents=[simulation_flags()], conflict_handler="resolve", help=text,
                             description=text)
        if kind == "breakdown":
            k.add_argument("--plan", action="append", type=plan_text("--plan"), default=None,
                           help="a plan to compare (repeat the flag); default: the simulate default")
            k.add_argument("--label", action="append", default=None, help="bar label per --plan (repeat)")
        if kind == "memory":
            k.add_argument("--by-module", action="store_true",
                           help="the busiest rank's named breakdown, activations stacked by module")
        k.add_argument("--out", required=True, help="image to write (.png, .svg or .pdf)")
    v = kinds.add_parser("validate", help="predicted vs measured of a run-record CSV")
    v.add_argument("runs", help="run-record CSV (schema: docs/formats.md)")
    v.add_argument("--annotate", action="store_true", help="label every point with its row id")
    v.add_argument("--out", required=True)
    for kind, text in (("sweep", "MFU vs tokens/s with the Pareto front"), ("heatmap", "best MFU by TP x PP")):
        s = kinds.add_parser(kind, help=f"{text}, from a sweep's results.parquet or ranked.csv")
        s.add_argument("results", help="sweep results (.parquet or .csv) with columns mfu, tokens_per_s, status, tp, pp")
        s.add_argument("--out", required=True)


def read_table(path: str, need: tuple[str, ...]):
    """A sweep table from Parquet or CSV, with the ``need`` columns checked (one-line ConfigError)."""
    from pathlib import Path

    import pandas as pd

    from npusim.config.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(path, "<file>", path, "file not found")
    suffix = p.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(path, "<file>", suffix, "unknown table format", ".parquet or .csv")
    try:
        df = pd.read_parquet(p) if suffix == ".parquet" else pd.read_csv(p)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
        raise ConfigError(path, "<file>", path, f"cannot read: {' '.join(str(e).split())}") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ConfigError(path, missing[0], None, "missing column", ", ".join(need))
    return numeric_columns(df, need, path, csv=suffix == ".csv")


def numeric_columns(df, cols, path: str, csv: bool = True):
    """``df`` with ``cols`` as floats: empty cells stay NaN (infeasible points), any other cell that
    is not a finite number is refused in one line naming the file, the row and the column."""
    import numpy as np
    import pandas as pd

    from npusim.config.errors import ConfigError

    def number(v) -> float:
        """A cell as a float; NaN for an empty cell; None when it is not a number."""
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            return float("nan")
        if isinstance(v, (bool, np.bool_)):
            return None
        try:
            x = float(v.strip() if isinstance(v, str) else v)
        except (TypeError, ValueError, OverflowError):
            return None
        return x if np.isfinite(x) else None

    df = df.copy()
    for c in dict.fromkeys(cols):
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            inf = np.isinf(col.to_numpy(dtype=float))
            if inf.any():
                i = int(np.flatnonzero(inf)[0])
                where = f"{path}:{i + 2}" if csv else f"{path} row {i}"
                raise ConfigError(where, c, col.iloc[i], "not a finite number", "finite numbers")
            continue  # already numbers (ints keep their dtype: TP/PP tick labels)
        raw = col.tolist()
        vals = [number(v) for v in raw]
        bad = [i for i, x in enumerate(vals) if x is None]
        if bad:
            i = bad[0]
            where = f"{path}:{i + 2}" if csv else f"{path} row {i}"
            raise ConfigError(where, c, raw[i], "not a finite number", "numbers (empty for infeasible points)")
        df[c] = pd.Series(vals, index=df.index, dtype=float)
    return df


def _figure(args):
    """The figure the arguments ask for, and a one-line note about it."""
    from npusim.report import plots
    from npusim.report.rebuild import memory_per_rank, simulate_inputs

    if args.kind == "breakdown":
        from npusim.commands.trace import inputs_from_args
        from npusim.config.errors import ConfigError

        plans = args.plan or [None]
        if args.label is not None and len(args.label) != len(plans):
            raise ConfigError("--label", "label", len(args.label), f"{len(plans)} --plan values but "
                              f"{len(args.label)} labels", "one --label per --plan")
        results = [simulate_inputs(inputs_from_args(args, plan), keep_timeline=False) for plan in plans]
        return plots.breakdown_bars(results, args.label), f"{len(results)} plans"
    if args.kind in ("gantt", "memory"):
        from npusim.commands.trace import inputs_from_args

        inp = inputs_from_args(args)
        res = simulate_inputs(inp, keep_timeline=args.kind == "gantt")
        if args.kind == "gantt":
            return plots.pipeline_gantt(res), f"step time {res.step_time_s:.3f} s"
        if args.by_module:
            return plots.memory_breakdown_bar(res), f"peak {res.peak_memory_GB:.1f} GB"
        return plots.memory_bars(res, memory_per_rank(res, inp.hardware)), f"peak {res.peak_memory_GB:.1f} GB"
    if args.kind == "validate":
        from npusim.validate.compare import validate_runs
        from npusim.validate.predict import predict_record
        from npusim.validate.runs import read_runs

        result = validate_runs(read_runs(args.runs), predict_record)
        s = result["summary"]
        return plots.predicted_vs_measured(result, annotate=args.annotate), \
            f"n={s['n']} MAPE={s['mape_pct']}% skipped={s['skipped']}"
    df = read_table(args.results, SWEEP_COLUMNS[args.kind] + ("mfu",))
    if args.kind == "sweep":
        return plots.sweep_scatter(df), f"{len(df)} plans"
    return plots.tp_pp_heatmap(df), f"{len(df)} plans"


def run(args) -> int:
    """Draw the figure and write it."""
    from npusim.outputs import check_file
    from npusim.report.plots import image_format, save_figure

    check_file(args.out, "--out")
    image_format(args.out)
    fig, note = _figure(args)
    save_figure(fig, args.out)
    print(f"wrote {args.out} ({args.kind}: {note})")
    return 0
