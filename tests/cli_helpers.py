"""Run the CLI in-process for tests."""
from npusim.cli import main


def cli(argv, capsys):
    """Run main() in-process; return (exit code, stdout, stderr). argparse errors raise SystemExit."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err
