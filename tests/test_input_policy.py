"""The input policy (npusim/config/policy.py, docs/robustness.md): every malformed input gives exactly
one line on stderr naming the file or flag, the field, a short prefix of the value and what is
allowed, exit code 2, no traceback and no hang. Classes: finite numbers, sizes and lengths,
strictness (repeated keys, booleans, aliases, unreadable files, deep nesting, table cells).

Each case is a reproducer of a defect found before the policy existed."""
from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli
from npusim.config.errors import ConfigError
from npusim.config.hardware import PROFILE_DIR_ENV, load_profile, profile_path
from npusim.config.model import load_model, preset_dirs
from npusim.config.plan import make_plan, parse_plan
from npusim.sweep.spec import load_spec

MAX_LINE = 500
"""No error line is longer than this (values are quoted as a prefix of at most ~60 characters)."""


@pytest.fixture(autouse=True)
def _only_repo_presets(monkeypatch):
    monkeypatch.delenv(PROFILE_DIR_ENV, raising=False)


def one_line(rc, out, err, *needles):
    """The CLI refused with exactly one short line on stderr containing every needle."""
    assert rc == 2, (rc, out[-300:], err[-2000:])
    lines = err.splitlines()
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    assert lines[0].startswith("npusim: error:"), lines[0]
    assert len(lines[0]) <= MAX_LINE, lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def refused(fn, *needles) -> str:
    """``fn()`` raises a one-line ConfigError containing every needle; return its text."""
    with pytest.raises(ConfigError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and len(msg) <= MAX_LINE, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def profile_text() -> str:
    return profile_path("nvidia-h100-sxm-80g").read_text(encoding="utf-8")


def model_text() -> str:
    return (preset_dirs()[0] / "llama2-7b.yaml").read_text(encoding="utf-8")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


HF = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
      "vocab_size": 32000, "intermediate_size": 11008}


def hf_json(**changes) -> str:
    """A Hugging Face config.json with raw JSON text substituted for some values."""
    text = json.dumps(HF)
    for key, raw in changes.items():
        text = text.replace(f'"{key}": {json.dumps(HF[key])}', f'"{key}": {raw}')
    return text


SPEC = {"name": "s", "hardware": "atlas-800t-a2", "devices": [16], "workload": {"seq_len": 2048, "global_batch": 32},
        "model": {"base": "llama2-7b"}, "plan": {"auto": True, "cp": [1]}, "objective": {"metric": "cost"},
        "tiers": {"full_top": 2}}
SERVING = {"name": "d", "hardware": "atlas-800i-a2", "devices": 4, "workload": {"kind": "decode", "input_len": 2048},
           "model": {"base": "llama2-7b"}, "plan": "auto"}


def spec_text(base: dict, **changes) -> str:
    spec = json.loads(json.dumps(base))
    for dotted, value in changes.items():
        node = spec
        *path, last = dotted.split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = value
    return yaml.safe_dump(spec, sort_keys=False)


# =============================================================================================
# 1. Finite numbers only
# =============================================================================================
class TestFiniteNumbers:
    @pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN", "1e400"])
    def test_hf_config_integers_must_be_finite(self, tmp_path, capsys, raw):
        # Before: OverflowError (cannot convert float infinity to integer) with a traceback.
        f = write(tmp_path, "config.json", hf_json(num_hidden_layers=raw))
        refused(lambda: load_model(str(f)), "num_hidden_layers", "finite")
        one_line(*cli(["model", "show", str(f)], capsys), "config.json", "num_hidden_layers", "finite")

    @pytest.mark.parametrize("raw", [".inf", "-.inf", ".nan", ".NaN", "1.0e400"])
    @pytest.mark.parametrize("field,old", [("chip.hbm_bandwidth_GBps", "hbm_bandwidth_GBps: 3350"),
                                           ("efficiency.gemm.m_half", "m_half: 64.57")])
    def test_profile_floats_must_be_finite(self, tmp_path, capsys, raw, field, old):
        # Before: `.inf` bandwidth simulated to exit 0, and `.inf` half-sizes divided by zero.
        text = profile_text()
        assert old in text
        lines = [text.replace(old, old.split(":")[0] + ": " + raw)]
        f = write(tmp_path, "hw.yaml", "\n".join(lines) + "\n")
        refused(lambda: load_profile(str(f)), field, "not a finite number")
        one_line(*cli(["simulate", "--model", "llama2-7b", "--hardware", str(f), "--devices", "8", "--plan", "tp=8",
                       "--global-batch", "8", "--json"], capsys), "hw.yaml", field, "finite")

    @pytest.mark.parametrize("price", [float("nan"), 0, -1.0, float("inf"), True, None, "cheap",
                                       {"atlas-800t-a2": float("nan")}, {"atlas-800t-a2": 0}],
                             ids=["nan", "zero", "negative", "inf", "bool", "null", "text", "map-nan", "map-zero"])
    def test_sweep_prices_are_positive_and_finite_at_spec_load(self, tmp_path, capsys, price):
        f = write(tmp_path, "spec.yaml", spec_text(SPEC, **{"objective.price_per_device_hour": price}))
        refused(lambda: load_spec(f), "objective.price_per_device_hour", "finite")
        out = tmp_path / "out"
        one_line(*cli(["sweep", str(f), "--out", str(out), "--workers", "1"], capsys), "price_per_device_hour")
        assert not out.exists()  # refused before any work

    @pytest.mark.parametrize("plan,field", [("capacity_factor=inf", "capacity_factor"),
                                            ("capacity_factor=nan", "capacity_factor"),
                                            ("routing_param=-inf", "routing_param")])
    def test_plan_numbers_must_be_finite(self, plan, field):
        refused(lambda: parse_plan(plan), field, "finite")

    def test_non_finite_floats_are_refused_in_typed_configs_too(self):
        refused(lambda: make_plan({"capacity_factor": float("inf")}), "capacity_factor", "finite")

    @pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
    def test_serving_flags_must_be_finite(self, capsys, value):
        one_line(*cli(["simulate", "--workload", "decode", "--model", "llama2-7b", "--hardware", "atlas-800i-a2",
                       "--devices", "8", "--draft-tokens", "2", "--accepted-tokens", value], capsys),
                 "accepted_tokens", "finite")

    @pytest.mark.parametrize("tokens,needle", [("1e400", "1e+18"), ("2e18", "1e+18"), ("9" * 400, "token count")],
                             ids=["1e400", "2e18", "400-digits"])
    def test_token_budget_is_finite_and_bounded(self, capsys, tokens, needle):
        # Before: `npusim plan --tokens 1e400` answered "inf days".
        line = one_line(*cli(["plan", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--tokens", tokens,
                              "--devices", "16", "--no-sensitivity"], capsys), "--tokens", needle)
        assert "9" * 100 not in line


# =============================================================================================
# 2. Integers of sane length, bounded sizes (the bound is in the message)
# =============================================================================================
class TestSizes:
    @pytest.mark.parametrize("suffix", [".yaml", ".json"])
    def test_a_5000_digit_integer_is_refused_by_length(self, tmp_path, capsys, suffix):
        big = "9" * 5000
        if suffix == ".yaml":
            f = write(tmp_path, "m.yaml", model_text().replace("layers: 32", f"layers: {big}"))
        else:
            f = write(tmp_path, "m.json", hf_json(hidden_size=big))
        msg = refused(lambda: load_model(str(f)), "5,000 digits", "at most 18 digits")
        assert big[:100] not in msg  # a prefix of the value, never the whole of it
        one_line(*cli(["model", "show", str(f)], capsys), "at most 18 digits")

    @pytest.mark.parametrize("text,field,bound", [
        ("layers: 1e9", "layers", "10000"),
        ("layers: 1000000000", "layers", "10000"),
        ("hidden: 1.0e12", "hidden", "16777216"),
        ("heads: 10000000", "heads", "65536"),
    ])
    def test_model_sizes_are_bounded(self, tmp_path, capsys, text, field, bound):
        key = text.split(":")[0]
        lines = [f"{text}" if t.startswith(f"{key}:") else t for t in model_text().splitlines()]
        f = write(tmp_path, "m.yaml", "\n".join(lines) + "\n")
        refused(lambda: load_model(str(f)), field, bound)
        one_line(*cli(["model", "show", str(f)], capsys), field, bound)

    def test_hf_sizes_are_bounded(self, tmp_path):
        f = write(tmp_path, "config.json", hf_json(num_hidden_layers="1e9"))
        refused(lambda: load_model(str(f)), "layers", "10000")

    def test_redundant_experts_are_bounded_not_hung(self, capsys):
        # Before: redundant_experts=1e9 ran an O(R^2) loop for hours.
        t = time.perf_counter()
        one_line(*cli(["simulate", "--model", "qwen3-30b-a3b", "--hardware", "nvidia-h100-sxm-80g", "--devices", "8",
                       "--plan", "ep=8,routing=zipf,redundant_experts=1000000000", "--global-batch", "8",
                       "--seq-len", "1024"], capsys), "redundant_experts", "256")
        refused(lambda: make_plan({"routing_samples": 10_000, "redundant_experts": 100}), "routing draws", "100,000")
        assert time.perf_counter() - t < 5

    @pytest.mark.parametrize("devices", ["1e12", 1_000_000_000_000, [8, 2_000_000], {"atlas-800i-a2": 10**12}])
    def test_sweep_device_counts_are_bounded(self, tmp_path, capsys, devices):
        # Before: `devices: 1e12` in a serving sweep made divisors() count to 10^12.
        f = write(tmp_path, "spec.yaml", spec_text(SERVING, devices=devices))
        t = time.perf_counter()
        refused(lambda: load_spec(f), "devices", "1000000")
        one_line(*cli(["sweep", str(f), "--out", str(tmp_path / "o")], capsys), "devices")
        assert time.perf_counter() - t < 5

    def test_divisors_are_found_in_sqrt_time(self):
        from npusim.sweep.space import divisors

        assert all(divisors(n) == [d for d in range(1, n + 1) if n % d == 0] for n in range(1, 500))
        t = time.perf_counter()
        assert divisors(10**12)[-3:] == [250_000_000_000, 500_000_000_000, 10**12]
        assert time.perf_counter() - t < 2

    @pytest.mark.parametrize("argv,needles", [
        (["--seed", "-1"], ("--seed", "0..")),
        pytest.param(["--seed", "9" * 30], ("--seed", "18 digits"), id="seed-30-digits"),
        (["--tokens", "100000", "--experts", "1024"], ("tokens x experts", "10,000,000")),
        pytest.param(["--tokens", "9" * 5000], ("--tokens", "18 digits"), id="tokens-5000-digits"),
        (["--trials", "1e3"], ("--trials", "not an integer")),
    ])
    def test_moe_score_sizes_and_seed(self, capsys, argv, needles):
        # Before: --seed -1 was a numpy traceback; huge sizes allocated tokens x experts x 16 bytes.
        one_line(*cli(["moe-score", *argv], capsys), *needles)

    @pytest.mark.parametrize("flag", ["--devices", "--seq-len", "--global-batch", "--draft-tokens"])
    def test_overlong_integer_flags_are_quoted_as_a_prefix(self, capsys, flag):
        line = one_line(*cli(["simulate", flag, "9" * 5000], capsys), flag, "18 digits")
        assert "9" * 100 not in line

    def test_config_error_never_renders_a_huge_value(self):
        t = time.perf_counter()
        for value in (10**50000, "x" * 10**7, list(range(10**6)), {str(i): i for i in range(10**5)}, b"\0" * 10**6):
            msg = str(ConfigError("f.yaml", "field", value, "bad"))
            assert len(msg) < 200, msg
        assert time.perf_counter() - t < 2

    @pytest.mark.parametrize("expr", ["hidden" + " + 1" * 5000, "(" * 5000 + "hidden" + ")" * 5000,
                                      "-" * 100_000 + "hidden"], ids=["sum", "parens", "minus"])
    def test_long_derive_expressions_are_refused_by_length(self, tmp_path, capsys, expr):
        # Before: RecursionError / MemoryError tracebacks from the expression parser.
        f = write(tmp_path, "spec.yaml", spec_text(SPEC, **{"model.derive": {"heads": expr}}))
        refused(lambda: load_spec(f), "model.derive.heads", "200")
        one_line(*cli(["sweep", str(f), "--out", str(tmp_path / "o")], capsys), "model.derive.heads")

    def test_eval_expr_has_a_length_limit(self):
        from npusim.sweep.space import eval_expr

        with pytest.raises(ValueError, match="at most 200"):
            eval_expr("1+" * 1000 + "1", {})
        assert eval_expr("max(hidden // 128, 1)", {"hidden": 4096}) == 32

    def test_a_file_over_10_MB_is_refused_by_size_before_parsing(self, tmp_path, capsys):
        f = tmp_path / "big.yaml"
        with f.open("wb") as fh:
            fh.write(b"name: x\n")
            fh.write(b"#" * (10 * 1024 * 1024) + b"\n")
        t = time.perf_counter()
        refused(lambda: load_profile(str(f)), "big.yaml", "file too large", "10,485,760 bytes")
        one_line(*cli(["hw", "show", str(f)], capsys), "file too large")
        assert time.perf_counter() - t < 1


# =============================================================================================
# 3. Strict types, no silent acceptance
# =============================================================================================
BOMB = "\n".join(
    [f'a0: &a0 ["{"lol" * 21}", "{"lol" * 21}", "{"lol" * 21}", "{"lol" * 21}", "{"lol" * 21}"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"
"""A "billion laughs" alias bomb (830 bytes, 5 x 9^9 strings of 63 characters when expanded)."""


class TestStrictness:
    @pytest.mark.parametrize("loader,text,field", [
        ("model", lambda: model_text() + "layers: 16\n", "layers"),
        ("model", lambda: model_text().replace("mla: null", "mla: {kv_lora_rank: 1, kv_lora_rank: 2}"), "kv_lora_rank"),
        ("hardware", lambda: profile_text().replace("  devices_per_node: 8", "  devices_per_node: 8\n  devices_per_node: 4"),
         "devices_per_node"),
    ])
    def test_repeated_yaml_keys_are_refused(self, tmp_path, capsys, loader, text, field):
        f = write(tmp_path, "x.yaml", text())
        load = load_model if loader == "model" else load_profile
        refused(lambda: load(str(f)), field, "repeated key", "line")
        one_line(*cli([{"model": "model", "hardware": "hw"}[loader], "show", str(f)], capsys), field, "repeated key")

    def test_repeated_keys_in_a_sweep_spec_are_refused(self, tmp_path):
        f = write(tmp_path, "spec.yaml", spec_text(SPEC) + "devices: [32]\n")
        refused(lambda: load_spec(f), "devices", "repeated key")

    def test_repeated_json_keys_are_refused(self, tmp_path):
        f = write(tmp_path, "config.json", json.dumps(HF)[:-1] + ', "hidden_size": 8192}')
        refused(lambda: load_model(str(f)), "hidden_size", "repeated key")

    def test_yaml_merge_keys_still_work(self, tmp_path):
        from npusim.config.policy import yaml_load

        assert yaml_load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n") == {
            "base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}}

    def test_every_project_yaml_load_uses_the_strict_loader(self):
        # No yaml.safe_load/yaml.load left in the package: every YAML load goes through policy.load_yaml.
        pkg = Path(__file__).resolve().parent.parent / "npusim"
        offenders = [str(p) for p in pkg.rglob("*.py") if "yaml.safe_load(" in p.read_text(encoding="utf-8")
                     or "yaml.load(" in p.read_text(encoding="utf-8")]
        assert offenders == []

    @pytest.mark.parametrize("plan,needle", [("tp=8,tp=4", "repeated plan key"), ("mb=2,micro_batch=2", "repeated plan key"),
                                             ("tp=2,pp=2,tp=2", "repeated plan key")])
    def test_repeated_plan_keys_are_refused(self, capsys, plan, needle):
        refused(lambda: parse_plan(plan), needle)
        one_line(*cli(["simulate", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--devices", "8",
                       "--plan", plan, "--global-batch", "8"], capsys), "--plan", needle)

    @pytest.mark.parametrize("argv", [["simulate"], ["trace", "--out", "t.json"], ["plot", "breakdown", "--out", "b.png"],
                                      ["plan", "--model", "llama2-7b", "--hardware", "atlas-800t-a2", "--tokens", "1T",
                                       "--days", "9"]])
    @pytest.mark.parametrize("empty", ["", " ", ","])
    def test_an_empty_plan_flag_is_refused(self, capsys, argv, empty):
        # Before: `--plan ""` silently ran the default plan.
        one_line(*cli([*argv, "--plan", empty], capsys), "--plan", "empty plan")

    @pytest.mark.parametrize("kind,text,field", [
        ("hw", lambda: profile_text().replace("devices_per_node: 8", "devices_per_node: true"), "node.devices_per_node"),
        ("hw", lambda: profile_text().replace("latency_us: ", "latency_us: false #", 1), "latency_us"),
        ("model", lambda: model_text().replace("layers: 32", "layers: true"), "layers"),
        ("model", lambda: model_text().replace("experts: 0", "experts: false"), "experts"),
    ])
    def test_booleans_are_not_numbers(self, tmp_path, capsys, kind, text, field):
        # Before: `devices_per_node: true` was read as 1.
        f = write(tmp_path, "x.yaml", text())
        one_line(*cli([kind, "show", str(f)], capsys), field, "a boolean, not a number")

    @pytest.mark.parametrize("change,field", [
        ({"devices": True}, "devices"), ({"devices": [16, True]}, "devices.1"),
        ({"workload.seq_len": True}, "workload.seq_len"), ({"model.vary": {"num_layers": [24, True]}}, "model.vary.num_layers"),
        ({"plan.tp": [True]}, "plan.tp"), ({"tiers.full_top": True}, "tiers.full_top"),
    ])
    def test_booleans_are_not_numbers_in_sweep_specs(self, tmp_path, change, field):
        f = write(tmp_path, "spec.yaml", spec_text(SPEC, **change))
        refused(lambda: load_spec(f), field, "boolean")

    def test_booleans_are_not_numbers_in_python_calls(self):
        refused(lambda: make_plan({"tp": True}), "tp", "boolean")

    def test_an_alias_bomb_is_refused_quickly_without_memory(self, tmp_path, capsys):
        f = write(tmp_path, "bomb.yaml", BOMB)
        assert 800 < len(BOMB.encode()) < 850
        tracemalloc.start()
        t = time.perf_counter()
        try:
            refused(lambda: load_profile(str(f)), "bomb.yaml", "alias expansion", "1,000,000")
            elapsed = time.perf_counter() - t
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert elapsed < 0.5 and peak < 20e6, (elapsed, peak)
        one_line(*cli(["sweep", str(f), "--out", str(tmp_path / "o")], capsys), "alias expansion")

    def test_modest_aliases_still_work(self):
        from npusim.config.policy import yaml_load

        assert yaml_load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}

    @pytest.mark.parametrize("make", ["model", "hw", "spec", "trace", "histogram"])
    def test_unreadable_files_give_one_line(self, tmp_path, capsys, monkeypatch, make):
        f = {"model": lambda: write(tmp_path, "m.yaml", model_text()),
             "hw": lambda: write(tmp_path, "h.yaml", profile_text()),
             "spec": lambda: write(tmp_path, "s.yaml", spec_text(SPEC)),
             "trace": lambda: write(tmp_path, "t.json", "[]"),
             "histogram": lambda: write(tmp_path, "hist.csv", "expert,tokens\n0,1\n")}[make]()
        real = Path.read_bytes

        def deny(self):
            if Path(self) == f:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", deny)
        argv = {"model": ["model", "show", str(f)], "hw": ["hw", "show", str(f)],
                "spec": ["sweep", str(f), "--out", str(tmp_path / "o")],
                "trace": ["compare", "--trace", str(f), "--model", "llama2-7b", "--devices", "8", "--plan", "tp=8"],
                "histogram": ["simulate", "--model", "qwen3-30b-a3b", "--hardware", "nvidia-h100-sxm-80g", "--devices",
                              "8", "--plan", f"ep=8,routing=histogram,routing_histogram={f}", "--global-batch", "8",
                              "--seq-len", "512"]}[make]
        one_line(*cli(argv, capsys), f.name, "Permission denied")

    def test_a_permission_error_from_any_reader_is_one_line(self, tmp_path, capsys, monkeypatch):
        # The CLI's backstop: an OSError naming a file (here from the run-record reader) is one line.
        import builtins

        f = write(tmp_path, "runs.csv", "id\n")
        real_open = builtins.open

        def deny(file, *a, **k):
            if str(file) == str(f):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", deny)
        monkeypatch.setattr(Path, "open", lambda self, *a, **k: deny(str(self), *a, **k))
        one_line(*cli(["validate", str(f)], capsys), "runs.csv", "Permission denied")

    def test_a_folder_where_a_file_is_expected_is_one_line(self, tmp_path, capsys):
        d = tmp_path / "dir.yaml"
        d.mkdir()
        one_line(*cli(["hw", "show", str(d)], capsys), "is a folder")

    @pytest.mark.parametrize("depth", [100, 100_000])
    def test_deeply_nested_json_trace_is_one_line(self, tmp_path, capsys, depth):
        # Before: RecursionError traceback from json.loads.
        f = write(tmp_path, "trace.json", "[" * depth + "]" * depth)
        line = one_line(*cli(["compare", "--trace", str(f), "--model", "llama2-7b", "--devices", "8", "--plan", "tp=8",
                              "--global-batch", "8"], capsys), "trace")
        assert ("trace.json" in line and "nested too deeply" in line) if depth > 1000 else "traceEvents" in line

    @pytest.mark.parametrize("name,text", [("deep.json", "[" * 100_000 + "]" * 100_000),
                                           ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000),
                                           ("nest.yaml", "a: " + "[" * 100 + "]" * 100)], ids=["json", "yaml", "yaml-100"])
    def test_deeply_nested_config_files_are_one_line(self, tmp_path, capsys, name, text):
        f = write(tmp_path, name, text)
        refused(lambda: load_profile(str(f)), "nested too deeply")
        one_line(*cli(["hw", "show", str(f)], capsys), "nested too deeply")

    @pytest.mark.parametrize("kind,cell,col", [("sweep", "fast", "mfu"), ("sweep", "inf", "tokens_per_s"),
                                               ("sweep", "x" * 500, "tokens_per_s"), ("heatmap", "fast", "mfu"),
                                               ("heatmap", "[1]", "tp"), ("heatmap", "x" * 500, "pp"),
                                               ("heatmap", "-inf", "pp"), ("sweep", "True", "mfu")],
                             ids=["sweep-text", "sweep-inf", "sweep-long", "heatmap-text", "heatmap-list", "heatmap-long",
                                  "heatmap-inf", "sweep-bool"])
    def test_non_numeric_cells_in_plot_tables_are_one_line(self, tmp_path, capsys, kind, cell, col):
        rows = [{"mfu": 0.4, "tokens_per_s": 1000.0, "status": "ok", "tp": 8, "pp": 2},
                {"mfu": 0.3, "tokens_per_s": 900.0, "status": "ok", "tp": 4, "pp": 4}]
        rows[1][col] = cell
        f = tmp_path / "r.csv"
        import csv

        with f.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        line = one_line(*cli(["plot", kind, str(f), "--out", str(tmp_path / "p.png")], capsys), "r.csv:3", col,
                        "not a finite number")
        assert "x" * 100 not in line

    def test_non_numeric_cells_in_parquet_are_one_line(self, tmp_path, capsys):
        import pandas as pd

        f = tmp_path / "r.parquet"
        pd.DataFrame({"mfu": ["0.4", "high"], "tokens_per_s": [1.0, 2.0], "status": ["ok", "ok"], "tp": [1, 2],
                      "pp": [1, 1]}).to_parquet(f)
        one_line(*cli(["plot", "sweep", str(f), "--out", str(tmp_path / "p.png")], capsys), "row 1", "mfu")

    def test_empty_cells_stay_infeasible_points(self, tmp_path, capsys):
        f = write(tmp_path, "r.csv", "mfu,tokens_per_s,status,tp,pp\n0.4,1000,ok,8,2\n,,infeasible,4,4\n")
        rc, out, err = cli(["plot", "heatmap", str(f), "--out", str(tmp_path / "p.png")], capsys)
        assert rc == 0, err

    def test_a_routing_histogram_error_does_not_echo_the_line(self, tmp_path, capsys):
        from npusim.workload.routing import load_histogram

        f = write(tmp_path, "hist.csv", "expert,tokens,note\n0,5,fine\n1,lots,SECRET-PAYLOAD-" + "z" * 200 + "\n")
        msg = refused(lambda: load_histogram(str(f), 8), "hist.csv:3", "tokens", "'lots'")
        assert "SECRET" not in msg and "zzz" not in msg
        line = one_line(*cli(["simulate", "--model", "qwen3-30b-a3b", "--hardware", "nvidia-h100-sxm-80g", "--devices",
                              "8", "--plan", f"ep=8,routing=histogram,routing_histogram={f}", "--global-batch", "8",
                              "--seq-len", "512"], capsys), "hist.csv:3")
        assert "SECRET" not in line

    @pytest.mark.parametrize("body,needle", [("expert,tokens\n0,nan\n", "finite"), ("expert,tokens\n0,1e400\n", "finite"),
                                             ("e,t\n0,1\n", "expert,tokens"), ("expert,tokens\n0,1\n\"unterminated", "hist.csv")])
    def test_routing_histogram_cells_are_checked(self, tmp_path, body, needle):
        from npusim.workload.routing import load_histogram

        f = write(tmp_path, "hist.csv", body)
        refused(lambda: load_histogram(str(f), 8), needle)
