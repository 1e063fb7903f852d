"""Figures of results: each function takes Results or a DataFrame and returns a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global state, never
``show()``), so they render headless (Agg for PNG) and display inline in notebooks. Save them with
``save_figure`` for byte-stable PNG/SVG files.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

PART_COLORS = {
    "compute": "#4c72b0", "recompute": "#8da0cb", "tp_comm": "#dd8452", "cp_comm": "#e5ae38",
    "ep_comm": "#c44e52", "pp_comm": "#937860", "dp_comm": "#55a868", "bubble": "#bbbbbb",
    "imbalance": "#da8bc3", "optimizer": "#8172b3", "other": "#333333",
}
"""One fixed colour per named part of the step time (the same in every figure)."""
FORWARD_COLORS = ("#4c72b0", "#7fa3d6", "#2a4a7f", "#a9c1e6")
BACKWARD_COLORS = ("#dd8452", "#f0b27a", "#a35427", "#f6cfa8")
OK_STATUS = ("ok",)
"""Sweep rows with these statuses (case-insensitive) are feasible plans."""


def _label(res) -> str:
    from npusim.report.rebuild import plan_label

    return plan_label(res.config["plan"])


def breakdown_frame(data, labels=None):
    """A DataFrame of ``breakdown_<part>_s`` columns and a ``label`` column, from a list of Results,
    one Result, or a DataFrame of ``Result.to_frame()`` rows (``label`` or ``plan`` column used)."""
    import pandas as pd

    if hasattr(data, "breakdown_s"):
        data = [data]
    if isinstance(data, pd.DataFrame):
        df = data.reset_index(drop=True).copy()
        if "label" not in df:
            df["label"] = df["plan"].astype(str) if "plan" in df else [f"#{i}" for i in range(len(df))]
    else:
        results = list(data)
        df = pd.concat([r.to_frame() for r in results], ignore_index=True)
        df["label"] = [_label(r) for r in results]
    if labels is not None:
        df["label"] = list(labels)
    return df


def breakdown_parts(df) -> list[str]:
    """Parts with a non-zero time in some row, in the canonical order (then any unknown part)."""
    from npusim.cost.passes import PART_NAMES

    cols = [c[len("breakdown_"):-2] for c in df.columns if c.startswith("breakdown_") and c.endswith("_s")]
    ordered = [p for p in PART_NAMES if p in cols] + sorted(p for p in cols if p not in PART_NAMES)
    return [p for p in ordered if (df[f"breakdown_{p}_s"].fillna(0) > 0).any()]


def breakdown_bars(data, labels=None, title: str | None = None) -> Figure:
    """Stacked bars of the step time by named part, one bar per plan (Results or to_frame() rows)."""
    df = breakdown_frame(data, labels)
    parts = breakdown_parts(df)
    fig = Figure(figsize=(max(5.0, 1.6 * len(df) + 3.0), 4.8), layout="constrained")
    ax = fig.add_subplot()
    x = list(range(len(df)))
    bottom = [0.0] * len(df)
    for p in parts:
        vals = df[f"breakdown_{p}_s"].fillna(0).astype(float).tolist()
        ax.bar(x, vals, 0.6, bottom=bottom, label=p, color=PART_COLORS.get(p, "#999999"))
        bottom = [b + v for b, v in zip(bottom, vals)]
    for xi, total in zip(x, bottom):
        ax.annotate(f"{total:.3g} s", (xi, total), xytext=(0, 3), textcoords="offset points", ha="center",
                    fontsize=8)
    ax.set_xticks(x, df["label"].tolist(), rotation=15 if len(df) > 2 else 0, ha="right" if len(df) > 2 else "center",
                  fontsize=8)
    ax.set_ylabel("step time (s)")
    ax.set_ylim(0, max(bottom + [1e-12]) * 1.12)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="part")
    ax.set_title(title or "Step time by part")
    return fig


def pipeline_gantt(result, title: str | None = None, labels: bool | None = None) -> Figure:
    """Gantt chart of the pipeline schedule: one row per rank, forward and backward units coloured
    (shades by chunk), micro-batch numbers inside the bars; needs ``result.timeline``."""
    if not result.timeline:
        raise ValueError("result has no timeline: simulate with keep_timeline=True (or report.rebuild.with_timeline)")
    pp = result.extra.get("pipeline_ranks") or (max(r for r, _ in result.timeline) + 1)
    if any(kind in ("W", "FB") for _, (kind, *_rest) in result.timeline):
        # Zero-bubble and DualPipe schedules: weight-gradient units and overlapped F&B pairs.
        from npusim.report.gantt_schedule import schedule_gantt

        c = result.config
        return schedule_gantt(result.timeline, pp, title=title or f"{c['model']['name']} on {c['devices']} x "
                              f"{c['hardware']}: {c.get('schedule')}, {c.get('micro_batches')} micro-batches")
    bars: dict[tuple[int, str, int], list[tuple[float, float]]] = {}
    texts = []
    for rank, (kind, stage, mb, start, end) in result.timeline:
        bars.setdefault((rank, kind, stage // pp), []).append((start, end - start))
        texts.append((rank, mb, start, end))
    fig = Figure(figsize=(11.0, 1.3 + 0.32 * pp), layout="constrained")
    ax = fig.add_subplot()
    for (rank, kind, chunk), spans in sorted(bars.items()):
        colors = FORWARD_COLORS if kind == "F" else BACKWARD_COLORS
        ax.broken_barh(spans, (rank - 0.4, 0.8), facecolors=colors[chunk % len(colors)], edgecolor="white",
                       linewidth=0.3)
    step = result.step_time_s
    if labels is None:
        labels = len(texts) <= 600
    if labels:
        for rank, mb, start, end in texts:
            if (end - start) / step > 0.008:
                ax.text((start + end) / 2, rank, str(mb), ha="center", va="center", fontsize=5, color="white")
    ax.axvline(step, color="black", linestyle="--", linewidth=0.8)
    ax.set_ylim(pp - 0.5, -0.5)
    ax.set_yticks(range(pp), [f"rank {r}" for r in range(pp)], fontsize=7 if pp > 8 else 9)
    ax.set_xlim(0, step * 1.01)
    ax.set_xlabel("time (s); dashed: end of step (after DP reduction and optimizer)")
    from matplotlib.patches import Patch

    chunks = sorted({c for (_, _, c) in bars})
    handles = [Patch(color=(FORWARD_COLORS if k == "F" else BACKWARD_COLORS)[c % len(FORWARD_COLORS)],
                     label=("forward" if k == "F" else "backward") + (f" (chunk {c})" if len(chunks) > 1 else ""))
               for k in ("F", "B") for c in chunks]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=len(handles), frameon=False)
    c = result.config
    ax.set_title(title or f"{c['model']['name']} on {c['devices']} x {c['hardware']}\n"
                          f"{_label(result)}; {c.get('micro_batches')} micro-batches, {c.get('schedule')}",
                 fontsize=10)
    return fig


def memory_bars(result, per_rank: list[dict] | None = None, title: str | None = None) -> Figure:
    """Memory per pipeline rank (stacked components, GB) against the HBM capacity line; without
    ``per_rank`` (``report.rebuild.memory_per_rank``) the busiest rank's components alone."""
    rows = per_rank if per_rank is not None else [result.memory_GB]
    names = ([f"rank {i}" for i in range(len(rows))] if per_rank is not None else ["busiest rank"])
    comps = [k for k in rows[0] if k != "total"]
    fig = Figure(figsize=(max(5.0, 0.45 * len(rows) + 3.5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    bottom = [0.0] * len(rows)
    palette = ("#4c72b0", "#55a868", "#8172b3", "#dd8452", "#c44e52", "#937860")
    for i, k in enumerate(comps):
        vals = [float(r.get(k, 0.0)) for r in rows]
        ax.bar(range(len(rows)), vals, 0.7, bottom=bottom, label=k, color=palette[i % len(palette)])
        bottom = [b + v for b, v in zip(bottom, vals)]
    cap = result.hbm_capacity_GB
    ax.axhline(cap, color="black", linestyle="--", linewidth=1.0, label=f"HBM {cap:.0f} GB")
    ax.set_xticks(range(len(rows)), names, rotation=90 if len(rows) > 8 else 0, fontsize=8)
    ax.set_ylabel("memory per device (GB)")
    ax.set_ylim(0, max(bottom + [cap]) * 1.1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_title(title or "Memory per pipeline rank")
    return fig


def memory_breakdown_bar(result, title: str | None = None) -> Figure:
    """The busiest rank's memory as its named breakdown (``extra.memory_breakdown_GB``): states,
    activations stacked by module, then the transient workspace and communication buffers above the
    peak the fit check uses, against the HBM capacity line."""
    b = result.extra["memory_breakdown_GB"]
    parts = [(k, float(b[k])) for k in ("weights", "gradients", "optimizer") if b.get(k)]
    parts += [(f"activations: {m}", float(v)) for m, v in sorted(b.get("activations_by_module", {}).items()) if v > 0]
    extra = [(k.replace("_", " "), float(b[k])) for k in ("workspace", "comm_buffers") if b.get(k)]
    fig = Figure(figsize=(6.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["tab20"]
    bottom = 0.0
    for i, (name, v) in enumerate(parts + extra):
        hatch = "//" if (name, v) in extra else None
        ax.bar([0], [v], 0.5, bottom=bottom, label=name, color=cmap(i % 20), hatch=hatch)
        bottom += v
    cap = result.hbm_capacity_GB
    ax.axhline(cap, color="black", linestyle="--", linewidth=1.0, label=f"HBM {cap:.0f} GB")
    ax.axhline(result.peak_memory_GB, color="grey", linestyle=":", linewidth=1.0,
               label=f"peak (fit check) {result.peak_memory_GB:.1f} GB")
    ax.set_xticks([0], ["busiest rank"])
    ax.set_xlim(-1, 1)
    ax.set_ylabel("memory per device (GB)")
    ax.set_ylim(0, max(bottom, cap) * 1.1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    ax.set_title(title or "Memory of the busiest rank by part and module")
    return fig


def _ok_rows(df):
    """Feasible rows of a sweep table (all rows when it has no ``status`` column)."""
    if "status" not in df:
        return df
    return df[df["status"].astype(str).str.lower().isin(OK_STATUS)]


def pareto_front(df, x: str = "tokens_per_s", y: str = "mfu"):
    """Rows no other row beats on both ``x`` and ``y`` (higher is better), sorted by ``x``."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, False], kind="mergesort")
    keep, best = [], float("-inf")
    for idx, yv in zip(d.index, d[y]):
        if yv > best:
            keep.append(idx)
            best = yv
    return d.loc[keep].sort_values(x, kind="mergesort")


def sweep_scatter(df, title: str | None = None) -> Figure:
    """MFU against tokens/s of every swept plan, infeasible ones greyed, with the Pareto front."""
    ok = _ok_rows(df)
    bad = df.drop(index=ok.index)
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    if len(bad):
        ax.scatter(bad["tokens_per_s"], 100 * bad["mfu"], marker="x", color="#bbbbbb", label=f"infeasible ({len(bad)})")
    ax.scatter(ok["tokens_per_s"], 100 * ok["mfu"], color="#4c72b0", s=18, label=f"feasible ({len(ok)})")
    front = pareto_front(ok)
    if len(front):
        ax.plot(front["tokens_per_s"], 100 * front["mfu"], color="#c44e52", marker="o", linewidth=1.2,
                drawstyle="steps-pre", label=f"Pareto front ({len(front)})")
    ax.set_xlabel("tokens/s")
    ax.set_ylabel("MFU (%)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Sweep: MFU vs throughput")
    return fig


def tp_pp_heatmap(df, value: str = "mfu", title: str | None = None) -> Figure:
    """Best ``value`` (MFU by default) of the feasible plans for every (TP, PP) pair."""
    import numpy as np

    ok = _ok_rows(df)
    table = ok.pivot_table(index="pp", columns="tp", values=value, aggfunc="max", dropna=False)
    # Every swept TP and PP keeps its row and column; pairs without a feasible plan stay blank.
    table = table.reindex(index=sorted(df["pp"].unique()), columns=sorted(df["tp"].unique()))
    fig = Figure(figsize=(1.0 + 0.9 * max(3, table.shape[1]), 1.2 + 0.7 * max(3, table.shape[0])), layout="constrained")
    ax = fig.add_subplot()
    scale = 100.0 if value == "mfu" else 1.0
    data = table.to_numpy(dtype=float) * scale
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto", origin="lower")
    mean = np.nanmean(data) if np.isfinite(data).any() else 0.0
    for (i, j), v in np.ndenumerate(data):
        text = (f"{v:.1f}" if scale == 100.0 else f"{v:.3g}") if np.isfinite(v) else "infeasible" if "status" in df else "-"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="#666666" if not np.isfinite(v) else "white" if v < mean else "black")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel("TP")
    ax.set_ylabel("PP")
    fig.colorbar(im, ax=ax, label="MFU (%)" if value == "mfu" else value)
    ax.set_title(title or f"Best {'MFU' if value == 'mfu' else value} by TP x PP")
    return fig


def predicted_vs_measured(validation: dict, band: float = 0.10, title: str | None = None,
                          annotate: bool = False) -> Figure:
    """Predicted against measured metric of every ok row of ``validate_runs`` output, with the y = x
    line and a +/- ``band`` region (log axes)."""
    import numpy as np

    rows = [r for r in validation["rows"] if r["status"] == "ok"]
    x = np.array([r["measured"] for r in rows], dtype=float)
    y = np.array([r["predicted"] for r in rows], dtype=float)
    fig = Figure(figsize=(5.8, 5.4), layout="constrained")
    ax = fig.add_subplot()
    lo = float(min(x.min(), y.min())) / 1.5 if len(rows) else 0.1
    hi = float(max(x.max(), y.max())) * 1.5 if len(rows) else 10.0
    line = np.geomspace(lo, hi, 50)
    ax.fill_between(line, line * (1 - band), line * (1 + band), color="#55a868", alpha=0.18,
                    label=f"±{100 * band:.0f} %")
    ax.plot(line, line, color="black", linewidth=0.8, label="y = x")
    inside = np.abs(y - x) <= band * x
    metrics = sorted({r["metric"] for r in rows})
    markers = dict(zip(metrics, "os^Dv"))
    for metric in metrics:
        sel = np.array([r["metric"] == metric for r in rows], dtype=bool)
        tag = f" {metric}" if len(metrics) > 1 else ""
        for mask, color, what in ((inside, "#4c72b0", f"within ±{100 * band:.0f} %"), (~inside, "#c44e52", "outside")):
            m = sel & mask
            if m.any():
                ax.scatter(x[m], y[m], s=16, color=color, marker=markers.get(metric, "o"),
                           label=f"{what}{tag} ({int(m.sum())})")
    if annotate:
        for r, xi, yi in zip(rows, x, y):
            ax.annotate(str(r["id"]), (xi, yi), xytext=(3, 2), textcoords="offset points", fontsize=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    what = metrics[0] if len(metrics) == 1 else "time (s)"
    ax.set_xlabel(f"measured {what}")
    ax.set_ylabel(f"predicted {what}")
    ax.legend(fontsize=8, loc="upper left")
    s = validation.get("summary", {})
    ax.set_title(title or f"Predicted vs measured: n={s.get('n')} MAPE={s.get('mape_pct')} % tau={s.get('kendall_tau')}")
    return fig


def image_format(path) -> str:
    """'png', 'svg' or 'pdf' from the suffix of ``path``; a one-line ConfigError otherwise."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        from npusim.config.errors import ConfigError

        raise ConfigError("--out", "out", str(path), "unknown image format", ".png, .svg or .pdf")
    return fmt


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG, SVG or PDF (by suffix) without timestamps, so reruns give the same bytes."""
    import matplotlib

    p = Path(path)
    fmt = image_format(p)
    meta = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    from npusim.outputs import atomic_path

    with matplotlib.rc_context({"svg.hashsalt": "npusim"}), atomic_path(p) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
    return p
