"""Bring your own runs: a user's run-record CSV with a profile YAML, a Hugging Face config.json and
only the required columns validates (step time, tokens/s and MFU); every malformed file is one line,
exit 2; the report explains each gap."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli
from npusim.config.errors import ConfigError
from npusim.validate.analysis import explain_gap
from npusim.validate.runs import TEMPLATE, read_runs

HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
             "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "rms_norm_eps": 1e-05, "tie_word_embeddings": False}
HEADER = "id,hardware,model,devices,plan,seq_len,global_batch,measured_step_time_s,measured_tokens_per_s,measured_mfu,flop_convention"
ROWS = [
    'run-a,profiles/my-910b.yaml,llama/config.json,8,"tp=1,pp=2,zero=1,recompute=selective",4096,64,14.2,,,',
    'run-b,profiles/my-910b.yaml,llama/config.json,16,"tp=2,sp=1,zero=1,recompute=none",4096,128,,37000,,',
    '7,profiles/my-910b.yaml,llama/config.json,8,"pp=2,zero=1,schedule=zb-h1,mb=1,recompute=none",4096,64,,,0.45,npusim',
]
BF16_TFLOPS = 313.0


def one_line_error(rc, err, *needles):
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """profiles/my-910b.yaml (``npusim hw show atlas-800t-a2`` with a renamed, slower bf16 SKU),
    llama/config.json (a Hugging Face config) and runs.csv naming both by relative path."""
    import contextlib
    import io

    from npusim.cli import main

    root = tmp_path_factory.mktemp("user")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["hw", "show", "atlas-800t-a2"]) == 0
    profile = yaml.safe_load(out.getvalue())
    profile["name"] = "my-910b"
    profile["chip"]["matrix_tflops"]["bf16"] = BF16_TFLOPS
    (root / "profiles").mkdir()
    (root / "profiles" / "my-910b.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text(json.dumps(HF_CONFIG))
    (root / "runs.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    return root


@pytest.fixture(scope="module")
def validated(folder, tmp_path_factory):
    """``npusim validate runs.csv --json --report out`` (run once, from another folder)."""
    import contextlib
    import io
    import os

    from npusim.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["validate", str(folder / "runs.csv"), "--json", "--report", str(folder / "out")])
    finally:
        os.chdir(cwd)
    assert rc == 0, err.getvalue()
    return json.loads(out.getvalue())


def test_user_rows_validate_on_their_own_metric(validated):
    rows = {r["id"]: r for r in validated["rows"]}
    assert list(rows) == ["run-a", "run-b", "7"]
    assert {k: rows[k]["metric"] for k in rows} == {"run-a": "step_time_s", "run-b": "tokens_per_s", "7": "mfu"}
    for r in rows.values():
        assert r["status"] == "ok", r
        assert {"id", "status", "measured", "predicted", "error_pct"} <= set(r)
        assert r["error_pct"] == pytest.approx(100 * (r["predicted"] - r["measured"]) / r["measured"], abs=0.01)
        assert r["mfu"]["convention"] == "npusim" and 0 < r["mfu"]["predicted"] < 1
        assert sum(r["breakdown_s"].values()) == pytest.approx(r["step_time_s"]["predicted"], rel=1e-6)
    assert rows["run-a"]["measured"] == 14.2 and rows["run-a"]["step_time_s"]["measured"] == 14.2
    b = rows["run-b"]
    assert b["measured"] == 37000 and b["step_time_s"]["measured"] == pytest.approx(128 * 4096 / 37000)
    assert b["predicted"] == pytest.approx(128 * 4096 / b["step_time_s"]["predicted"])
    m = rows["7"]
    assert m["measured"] == 0.45 and m["mfu"]["measured"] == pytest.approx(0.45)
    assert m["predicted"] == pytest.approx(m["mfu"]["predicted"])
    assert validated["summary"]["n"] == 3 and validated["summary"]["does_not_fit"] == 0


def test_profile_and_config_json_are_the_ones_used(folder, validated):
    """The MFU peak is the edited profile's bf16 peak, and the model is the config.json's shape."""
    from npusim.flops import model_flops_per_token
    from npusim.config.model import load_model

    model = load_model(str(folder / "llama" / "config.json"))
    r = next(r for r in validated["rows"] if r["id"] == "7")
    flops = model_flops_per_token(model, 4096) * 64 * 4096
    assert r["mfu"]["predicted"] == pytest.approx(flops / (r["step_time_s"]["predicted"] * 8 * BF16_TFLOPS * 1e12))
    assert r["hardware"] == "profiles/my-910b.yaml" and r["model"] == "llama/config.json"


def test_report_has_table_plot_and_gap_per_row(folder, validated):
    text = (folder / "out" / "report.md").read_text(encoding="utf-8")
    png = folder / "out" / "measured_vs_predicted.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![measured vs predicted](measured_vs_predicted.png)" in text
    for rid in ("run-a", "run-b", "7"):
        assert f"| {rid} |" in text and f"### {rid} (" in text
    assert "The measured step is" in text and "of the prediction" in text
    assert "exposed TP communication is" in text  # run-b (TP 2) lists its exposed TP collectives


def test_text_table_shows_metric_and_mfu(folder, capsys):
    rc, out, err = cli(["validate", str(folder / "runs.csv")], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["id", "metric", "measured", "predicted", "error"] and "MFU" in lines[0]
    assert lines[-1].startswith("n=3 ") and "does_not_fit=0" in lines[-1]


def test_does_not_fit_says_how_much(tmp_path, capsys):
    (tmp_path / "big.csv").write_text(
        "id,hardware,model,devices,plan,seq_len,global_batch,measured_step_time_s\n"
        'big,nvidia-h100-sxm-80g,llama3-70b,8,"tp=8,recompute=full,mb=1",4096,8,30\n')
    rc, out, err = cli(["validate", str(tmp_path / "big.csv"), "--json"], capsys)
    assert rc == 0, err
    row = json.loads(out)["rows"][0]
    assert row["status"] == "does_not_fit" and row["predicted"] > 0
    assert row["reason"].endswith(" GB of 80.0 GB") and row["memory_GB"]["peak"] > 80


@pytest.mark.parametrize("header, row, needles", [
    ("id,hardware,model,devices,measured_step_time_s", "a,atlas-800t-a2,llama2-7b,8,10",
     ("missing required columns: plan, seq_len, global_batch",)),
    ("id,hardware,model,devices,plan,seq_len,global_batch", "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64",
     ("missing required column: one of measured_step_time_s",)),
    (HEADER.replace("measured_mfu", "measured_mfu_pct"), "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64,10,,,",
     ("unknown column 'measured_mfu_pct'", "did you mean 'measured_mfu'")),
    (HEADER + ",workload", "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64,10,,,,", ("runs.csv:2", "workload", "blank")),
    (HEADER, "a,profiles/missing.yaml,llama2-7b,8,tp=2,4096,64,10,,,", ("runs.csv:2", "hardware", "file not found")),
    (HEADER, "a,my-9l0b,llama2-7b,8,tp=2,4096,64,10,,,", ("unknown hardware preset", "cloudmatrix-384")),
    (HEADER, "a,atlas-800t-a2,llama/missing.json,8,tp=2,4096,64,10,,,", ("model", "file not found")),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,tpp=2,4096,64,10,,,", ("runs.csv:2: plan", "unknown plan key", "'tp'")),
    (HEADER, 'a,atlas-800t-a2,llama2-7b,8,"tp=2,schedule=fast",4096,64,10,,,', ("plan", "schedule")),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,tp=x,4096,64,10,,,", ("plan", "not an integer")),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64,,,0.4,", ("flop_convention", "measured_mfu")),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64,,,45,npusim", ("measured_mfu", "45")),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,tp=2,4096,64,,,,", ("a train row needs a measured value",)),
    (HEADER, "a,atlas-800t-a2,llama2-7b,8,dp=3,4096,64,10,,,", ("tp*pp*cp*dp = 3 but devices = 8",)),
    (HEADER, "a,atlas-800t-a2,,8,tp=2,4096,64,10,,,", ("layers", "row without a model")),
])
def test_malformed_files_are_one_line_exit_2(folder, capsys, header, row, needles):
    path = folder / "bad" / "runs.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"{header}\n{row}\n")
    one_line_error(*cli(["validate", str(path)], capsys)[::2], *needles)


def test_flag_errors(capsys, tmp_path):
    one_line_error(*cli(["validate"], capsys)[::2], "required")
    (tmp_path / "file").write_text("x")
    one_line_error(*cli(["validate", str(tmp_path / "x.csv"), "--report", str(tmp_path / "file")], capsys)[::2],
                   "--report", "is a file")


def test_template_prints_a_file_that_reads(tmp_path, capsys):
    rc, out, _ = cli(["validate", "--template"], capsys)
    assert rc == 0 and out == TEMPLATE
    path = tmp_path / "runs.csv"
    path.write_text(out)
    recs = read_runs(path)
    assert [r.id for r in recs] == ["run-a", "run-b", "run-c"]
    assert (recs[0].measured_step_time_s, recs[1].measured_tokens_per_s, recs[2].measured_mfu) == (8.1, 46000, 0.45)


def test_explain_gap_names_the_parts_that_would_have_to_change():
    parts = {"compute": 5.0, "ep_comm": 1.1, "bubble": 0.5, "optimizer": 0.01}
    longer = explain_gap(8.4, 6.61, parts)
    assert longer["gap_s"] == pytest.approx(1.79)
    assert longer["text"].startswith("the measured step is 1.79 s longer")
    assert [p["part"] for p in longer["parts"]] == ["compute", "ep_comm", "bubble"]  # optimizer < 10 % of gap
    assert "exposed EP all-to-all is 1.1 s of the prediction" in longer["parts"][1]["text"]
    shorter = explain_gap(5.0, 6.61, parts)
    assert "shrink by 32 %" in shorter["parts"][0]["text"]  # 1.61 s of compute's 5 s
    assert "even without it" in shorter["parts"][2]["text"]  # bubble 0.5 s < 1.61 s
    assert explain_gap(6.6, 6.61, parts)["parts"] == []


def test_any_preset_inline_overrides_and_plan_paths(folder, tmp_path):
    """Presets beyond the published seven, an inline shape column over a config.json, and a
    routing histogram named relative to the CSV."""
    from npusim.validate.runs import record_hardware, record_model, record_plan_fields

    (tmp_path / "hist.csv").write_text("expert,tokens\n0,10\n1,30\n")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(HF_CONFIG))
    path = tmp_path / "runs.csv"
    path.write_text(
        "id,hardware,model,devices,plan,seq_len,global_batch,measured_step_time_s,layers\n"
        "cm,cloudmatrix-384,llama2-7b,8,,4096,64,10,\n"
        "sku,atlas-800t-a2-313t,llama/config.json,8,tp=2,4096,64,10,16\n"
        "moe,atlas-800t-a2,mixtral-8x7b,8,\"ep=8,routing=histogram,routing_histogram=hist.csv\",4096,64,10,\n")
    cm, sku, moe = read_runs(path)
    assert record_hardware(cm).name == "cloudmatrix-384" and record_hardware(sku).name == "atlas-800t-a2-313t"
    assert record_model(sku).layers == 16 and record_model(sku).hidden == 4096
    assert record_plan_fields(moe)["routing_histogram"] == str(tmp_path / "hist.csv")
    path.write_text(path.read_text().replace("hist.csv", "nohist.csv"))
    with pytest.raises(ConfigError, match="routing_histogram file not found"):
        read_runs(path)
