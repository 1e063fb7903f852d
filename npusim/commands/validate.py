"""`npusim validate`: measured vs predicted on run records."""
from __future__ import annotations

import json


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("validate", help="predict every row of a run-record CSV and compare")
    p.add_argument("runs", help="run-record CSV (schema: docs/formats.md)")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    """Predict every row of a run-record file."""
    from npusim.validate.compare import format_table, validate_runs
    from npusim.validate.predict import predict_record
    from npusim.validate.runs import read_runs

    result = validate_runs(read_runs(args.runs), predict_record)
    print(json.dumps(result, sort_keys=True) if args.json else format_table(result))
    return 0
