"""`npusim microbench`: time the calibration kernel set with PyTorch on the local accelerator."""
from __future__ import annotations

from npusim.validate.runs import HARDWARE


def register(sub) -> None:
    """Add this command's parser."""
    p = sub.add_parser("microbench", help="time GEMM, grouped GEMM, attention and memory kernels with PyTorch",
                       description="Run the kernel set of npusim/data/calibration/h200 on the local accelerator "
                                   "(CUDA; Ascend through torch_npu; else the CPU) and write gemm.csv, "
                                   "grouped_gemm.csv, attention.csv, memory.csv and env.json for `npusim calibrate "
                                   "--from`. Needs PyTorch: pip install 'npusim[bench]'.")
    p.add_argument("--out", required=True, help="folder to write (created when missing)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "npu"], default="auto",
                   help="where to run (auto: CUDA, else Ascend NPU, else CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU; checks the pipeline only)")
    p.add_argument("--steps", action="store_true",
                   help="also time whole single-device bf16 training steps of 1-7B dense and MoE decoders and "
                        "write them as run records (training_steps.csv) for `npusim validate`, with each step's host "
                        "issue time and operator count (training_steps_host.csv)")
    p.add_argument("--hardware", choices=HARDWARE, default=None, metavar="PRESET",
                   help="hardware preset the training-step records name (default: from the device name, "
                        "else nvidia-h200-sxm-141g)")


def run(args) -> int:
    """Benchmark and write the calibration folder."""
    import sys

    from npusim.outputs import check_dir
    from npusim.validate.microbench import run_microbench

    check_dir(args.out, "--out")
    counts = run_microbench(args.out, args.device, args.quick, log=lambda line: print(line, file=sys.stderr),
                            steps=args.steps, hardware=args.hardware)
    print(f"wrote {args.out}: " + ", ".join(f"{k} ({v} rows)" for k, v in counts.items()) + ", env.json"
          + (f"; then: npusim validate {args.out}/training_steps.csv" if args.steps else ""))
    return 0
