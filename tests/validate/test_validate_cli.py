"""npusim validate: --plot (predicted vs measured) and --by component (with and without --breakdown)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from npusim.config.errors import ConfigError
from npusim.validate.components import component_rows, read_breakdown
from npusim.validate.runs import published_path
from cli_helpers import cli

IDS = ("V001", "V002")




def one_line_error(rc, err, *needles):
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two published dense A100 rows (fast to simulate)."""
    lines = published_path().read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    path.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0] in IDS]) + "\n")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "breakdown.csv"
    path.write_text(text)
    return path


def test_plot_and_components_with_breakdown(runs, tmp_path, capsys):
    bd = write(tmp_path, "id,part,measured_s\nV001,compute,2.0\nV001,dp_comm,0.05\nV002,optimizer,0.5\n")
    png = tmp_path / "pvm.png"
    rc, out, err = cli(["validate", str(runs), "--plot", str(png), "--by", "component", "--breakdown", str(bd)],
                       capsys)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "n=2 MAPE=" in out and f"wrote {png}" in out
    sections = out.split("\n\nV001:")[1].split("\nV002:")
    v1 = [ln.split() for ln in sections[0].splitlines()[2:]]
    assert v1[0][0] == "compute" and v1[0][1] == "2" and float(v1[0][3]) > 0  # largest gap first
    assert v1[1][0] == "dp_comm" and v1[1][1] == "0.05"
    assert all(row[1] == "-" and row[3] == "-" for row in v1[2:]) and "recompute" in {r[0] for r in v1}
    v2 = [ln.split() for ln in sections[1].splitlines()[2:]]
    assert v2[0][0] == "optimizer" and float(v2[0][3]) < 0


def test_components_json_without_breakdown(runs, capsys):
    rc, out, err = cli(["validate", str(runs), "--by", "component", "--json"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["summary"]["n"] == 2 and set(doc["components"]) == set(IDS)
    for rid, parts in doc["components"].items():
        row = next(r for r in doc["rows"] if r["id"] == rid)
        assert sum(p["predicted_s"] for p in parts) == pytest.approx(row["predicted"], rel=1e-6)
        assert all(p["measured_s"] is None and p["gap_s"] is None for p in parts)
        preds = [p["predicted_s"] for p in parts]
        assert preds == sorted(preds, reverse=True)


@pytest.mark.parametrize("text,needles", [
    ("id,part\nV001,compute\n", ("missing column", "measured_s")),
    ("id,part,measured_s\nV001,compte,1\n", ("breakdown.csv:2", "unknown part", "compute")),
    ("id,part,measured_s\nV009,compute,1\n", ("not a run",)),
    ("id,part,measured_s\nV001,compute,-1\n", ("non-negative",)),
    ("id,part,measured_s\nV001,compute,abc\n", ("not a number",)),
    ("id,part,measured_s\nV001,compute,1\nV001,compute,2\n", ("breakdown.csv:3", "given twice")),
])
def test_breakdown_errors(runs, tmp_path, capsys, text, needles):
    bd = write(tmp_path, text)
    rc, _, err = cli(["validate", str(runs), "--by", "component", "--breakdown", str(bd)], capsys)
    one_line_error(rc, err, *needles)


def test_flag_errors(runs, tmp_path, capsys):
    bd = write(tmp_path, "id,part,measured_s\n")
    one_line_error(*cli(["validate", str(runs), "--breakdown", str(bd)], capsys)[::2], "--by component")
    one_line_error(*cli(["validate", str(runs), "--plot", str(tmp_path / "x.gif")], capsys)[::2], "image format")
    one_line_error(*cli(["validate", str(runs), "--plot", str(tmp_path / "no" / "x.png")], capsys)[::2],
                   "folder does not exist")
    one_line_error(*cli(["validate", str(runs), "--by", "component", "--breakdown", str(tmp_path / "nope.csv")],
                        capsys)[::2], "file not found")


def test_read_breakdown_and_rows(tmp_path):
    bd = write(tmp_path, "id,part,measured_s\nA,compute,1.5\nA,bubble,0\nB,other,0.25\n")
    assert read_breakdown(bd) == {"A": {"compute": 1.5, "bubble": 0.0}, "B": {"other": 0.25}}
    with pytest.raises(ConfigError, match="not a run"):
        read_breakdown(bd, {"A"})
    rows = component_rows({"compute": 1.0, "tp_comm": 0.2, "bubble": 0.0, "other": 1e-16},
                          {"compute": 1.1, "bubble": 0.3})
    assert [r["part"] for r in rows] == ["bubble", "compute", "tp_comm"]
    assert rows[0]["gap_pct"] == -100.0 and rows[1]["gap_s"] == pytest.approx(-0.1) and rows[2]["gap_s"] is None


def _published(tmp_path: Path, ids: tuple[str, ...]) -> Path:
    lines = published_path().read_text(encoding="utf-8").splitlines()
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",", 1)[0] in ids]) + "\n")
    return path


def test_published_row_that_does_not_fit_is_not_ok(tmp_path, capsys):
    """V100: npusim's peak memory for the stated plan is above the H100's 80 GB, so the row is not 'ok'."""
    rc, out, err = cli(["validate", str(_published(tmp_path, ("V100",))), "--json", "--by", "component"], capsys)
    assert rc == 0, err
    doc = json.loads(out)
    row = doc["rows"][0]
    assert row["status"] == "does_not_fit" and row["reason"].endswith("GB of 80.0 GB")
    assert row["memory_GB"]["peak"] > row["memory_GB"]["capacity"] == 80.0
    assert row["mfu"]["convention"] == "nemo-automodel" and row["mfu"]["measured"] == pytest.approx(0.252, abs=0.001)
    assert doc["summary"]["does_not_fit"] == 1 and doc["summary"]["n"] == 1
    assert "V100" in doc["components"]  # its predicted step is still broken down


def test_report_and_json_rows_on_published_rows(runs, tmp_path, capsys):
    out_dir = tmp_path / "report"
    rc, out, err = cli(["validate", str(runs), "--report", str(out_dir)], capsys)
    assert rc == 0, err
    assert f"wrote {out_dir / 'report.md'}" in out and "does_not_fit=0" in out
    text = (out_dir / "report.md").read_text(encoding="utf-8")
    assert "| V001 |" in text and "(megatron-eq3)" in text and "### V002 (ok, " in text
    assert (out_dir / "measured_vs_predicted.png").read_bytes()[:4] == b"\x89PNG"
