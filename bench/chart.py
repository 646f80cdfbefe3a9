"""One PNG of the latest benchmark results: every target against its threshold, plus the figures
recorded without a target (the read API's p50/p95).

    .venv/bin/python -m bench.chart [--results-dir bench/results] [--output bench/results/latest.png]

Top panel: one bar per target, its figure divided by its threshold, with the threshold at 1.0. The
green band in each row is the side where the target is met (right of the line for ">=" targets,
left of it for "<" targets); a bar is green when met, red when not. Bottom panel: informational
figures, grouped. The footer names each result's time, duration, parameters and load average.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first

if __package__:  # python -m bench.chart
    from bench import common
else:  # python bench/chart.py: bench/ is on sys.path
    import common

MET, MISSED, UNMEASURED = "#2e7d32", "#c62828", "#9e9e9e"
PASS_BAND = "#e8f5e9"
SERIES_COLORS = ["#5c6bc0", "#ef6c00", "#26a69a", "#8d6e63"]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "ratio":
        return f"{value:.2f}"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def _threshold(t: dict[str, Any]) -> str:
    op = {">=": "≥", "<=": "≤"}.get(t["op"], t["op"])
    return f"{op} {_fmt(float(t['threshold']), t['unit'])}"


def _parameters(params: dict[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if isinstance(value, list):
            value = ",".join(f"{v:,}" if isinstance(v, int) else str(v) for v in value)
        elif isinstance(value, int):
            value = f"{value:,}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def _targets_panel(ax: Any, results: list[dict[str, Any]], failed: list[str]) -> None:
    rows = [(r, t) for r in results for t in r["targets"]]
    if not rows:
        ax.text(0.5, 0.5, "no targets recorded yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    scores = [None if t["value"] is None else t["value"] / t["threshold"] for _, t in rows]
    known = [s for s in scores if s is not None]
    right = max([1.6, *(s * 1.5 for s in known)])  # room for the label right of the longest bar
    left = min([0.0, *(s * 1.08 for s in known)])
    ax.set_xlim(left, right)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first target on top
    for y, ((result, t), score) in enumerate(zip(rows, scores, strict=True)):
        lower_is_better = t["op"] in ("<", "<=")
        band = (left, 1.0) if lower_is_better else (1.0, right)
        ax.fill_between(band, y - 0.45, y + 0.45, color=PASS_BAND, zorder=0, linewidth=0)
        color = UNMEASURED if t["met"] is None else (MET if t["met"] else MISSED)
        if score is not None:
            ax.barh(y, score, height=0.55, color=color, zorder=2)
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        stale = "; last run FAILED, figure from before" if result["benchmark"] in failed else ""
        label = f"{_fmt(t['value'], t['unit'])}   (target {_threshold(t)}: {verdict}{stale})"
        x = max(score or 0.0, 0.0)
        ax.text(
            x + (right - left) * 0.01,
            y,
            label,
            va="center",
            ha="left",
            fontsize=9.5,
            color="#212121",
            zorder=3,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5},
        )
    ax.axvline(1.0, color="#212121", linewidth=1.2, zorder=1)
    ax.text(1.0, -0.62, "threshold", ha="center", va="bottom", fontsize=8.5, color="#424242")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([textwrap.fill(t["name"], 34) for _, t in rows], fontsize=10)
    ax.set_xlabel("figure / threshold  (green band: where the target is met)", fontsize=9.5)
    ax.set_title("Targets", loc="left", fontsize=12, fontweight="bold")
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _info_panel(ax: Any, results: list[dict[str, Any]]) -> None:
    entries = [e for r in results for e in r.get("informational", [])]
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault(e.get("group") or e["name"], []).append(e)
    series = list(dict.fromkeys(e.get("series") or "" for e in entries))
    height = 0.8 / max(1, len(series))
    top = max(e["value"] for e in entries)
    for gi, members in enumerate(groups.values()):
        for e in members:
            si = series.index(e.get("series") or "")
            y = gi - 0.4 + height * (si + 0.5)
            ax.barh(y, e["value"], height=height * 0.9, color=SERIES_COLORS[si % len(SERIES_COLORS)], zorder=2)
            ax.text(e["value"] + top * 0.01, y, _fmt(e["value"], e["unit"]), va="center", fontsize=8.5)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.18)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(list(groups), fontsize=10)
    units = sorted({e["unit"] for e in entries})
    ax.set_xlabel(", ".join(units), fontsize=9.5)
    names = sorted({r["benchmark"] for r in results if r.get("informational")})
    ax.set_title(f"Recorded, no target yet ({', '.join(names)})", loc="left", fontsize=12, fontweight="bold")
    handles = [plt.Rectangle((0, 0), 1, 1, color=SERIES_COLORS[i % len(SERIES_COLORS)]) for i in range(len(series))]
    if any(series):
        ax.legend(handles, series, loc="lower right", fontsize=9, frameon=False)
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _footer(results: list[dict[str, Any]], failed: list[str]) -> str:
    lines = []
    for r in results:
        load = r["machine"].get("load_avg_start")
        lines.append(
            f"{r['benchmark']:<17} {r['finished_at'].replace('T', ' ')}  {r['duration_s']:>6.0f}s  "
            + ("QUICK  " if r.get("quick") else "")
            + _parameters(r["parameters"])
            + (f"  (load {load[0]:.1f} at start)" if load else "")
        )
    for name in failed:
        lines.append(f"{name:<17} FAILED in the last run: the figures above are from an earlier run, if any")
    return "\n".join(lines)


def draw(results_dir: Path = common.RESULTS_DIR, output: Path | None = None, failed: list[str] | None = None) -> Path:
    """Draw `<results_dir>/latest.png` (or `output`) from the result files there; returns the path."""
    results = common.load_results(results_dir)
    output = output or results_dir / "latest.png"
    failed = failed or []
    has_info = any(r.get("informational") for r in results)
    n_targets = sum(len(r["targets"]) for r in results)
    n_groups = len({e.get("group") or e["name"] for r in results for e in r.get("informational", [])})
    target_h = 0.62 * max(n_targets, 2) + 1.0
    info_h = 0.5 * n_groups + 1.2 if has_info else 0.0
    footer_h = 0.17 * (len(results) + len(failed)) + 0.2
    fig_h = 1.1 + target_h + info_h + footer_h
    fig = plt.figure(figsize=(13, fig_h), dpi=110)
    ratios = [target_h, info_h] if has_info else [target_h]
    grid = fig.add_gridspec(
        len(ratios),
        1,
        height_ratios=ratios,
        top=1 - 1.1 / fig_h,
        bottom=(footer_h + 0.75) / fig_h,
        left=0.25,
        right=0.97,
        hspace=0.55 / (target_h + info_h) * len(ratios) * 2,
    )
    _targets_panel(fig.add_subplot(grid[0]), results, failed)
    if has_info:
        _info_panel(fig.add_subplot(grid[1]), results)

    quick = any(r.get("quick") for r in results)
    commits = sorted({(r["git"].get("commit") or "?")[:9] for r in results})
    machines = sorted({f"{r['machine']['cpu_count']} CPUs, Python {r['machine']['python']}" for r in results})
    title = "tracehouse benchmarks: latest results"
    fig.text(0.02, 1 - 0.35 / fig_h, title, fontsize=15, fontweight="bold", va="top")
    fig.text(
        0.02,
        1 - 0.72 / fig_h,
        f"{'; '.join(machines) or 'no results'} · commit {', '.join(commits) or '-'} · bench/README.md",
        fontsize=9.5,
        va="top",
        color="#424242",
    )
    if quick:
        fig.text(
            0.98,
            1 - 0.35 / fig_h,
            "QUICK SMOKE RUN: tiny sizes, figures not meaningful",
            fontsize=12,
            fontweight="bold",
            color=MISSED,
            ha="right",
            va="top",
        )
    fig.text(0.02, 0.2 / fig_h, _footer(results, failed), fontsize=8, family="monospace", va="bottom", color="#424242")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=None, help="default: <results-dir>/latest.png")
    args = parser.parse_args()
    print(draw(args.results_dir, args.output))


if __name__ == "__main__":
    main()
