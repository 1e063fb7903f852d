"""`npusim calibrate`: fit efficiency models from kernel timings."""
from __future__ import annotations


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("calibrate", help="fit a profile's efficiency models from kernel timings")
    p.add_argument("--hardware", required=True, help="profile preset name or YAML path to start from")
    p.add_argument("--from", dest="data_dir", required=True, help="folder with gemm.csv, grouped_gemm.csv, attention.csv, memory.csv")
    p.add_argument("--out", required=True, help="profile YAML to write (may be the input file)")


def run(args) -> int:
    """Fit the calibration section and write the profile."""
    from pathlib import Path

    from npusim.config.hardware import load_profile, profile_path
    from npusim.outputs import check_file
    from npusim.validate.calibrate import calibrate
    from npusim.validate.profile_io import write_calibrated_profile

    check_file(args.out, "--out")
    hw = load_profile(args.hardware)
    cal = calibrate(hw, args.data_dir)
    write_calibrated_profile(profile_path(args.hardware), cal, Path(args.out))
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in cal["residuals"].items()))
    return 0
