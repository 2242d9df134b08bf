"""Validation accuracy against wall minutes for finished runs: a table and an SVG figure.

    python bench/time_to_accuracy.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--out docs/time_to_accuracy.svg]
                                     [--goal 0.80 --goal 0.886] [--paused-over 2]

Minutes are the cumulative epoch times recorded in each run's metrics.csv (training and
validation, the way the Train page counts them; resumes add up), so the curves of runs made at
different times compare. `--paused-over F` counts an epoch that took over F times the run's
median epoch (the trainer paused, or other work had the machine) at the median, and says how
many it changed, so a long run's curve shows its idle speed. Accuracy is each epoch's validation accuracy, on the run's own
validation split. The SVG is drawn here (no plotting library needed), one polyline per run.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path
from xml.sax.saxutils import escape

COLOURS = ("#2a7ab0", "#e4572e", "#4b8f29", "#8e44ad", "#b8860b")
W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 420, 60, 60, 30, 50


def curve(run_dir: Path, paused_over: float | None = None) -> tuple[list[tuple[float, float]], int]:
    """(cumulative minutes, validation accuracy) after each epoch; how many epochs were counted at
    the median because they took over `paused_over` times as long."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "epoch_seconds" not in rows[0]:
        raise SystemExit(f"{run_dir}: metrics.csv has no epoch_seconds (a run made before they were recorded)")
    seconds = [float(row["epoch_seconds"]) for row in rows]
    median = statistics.median(seconds) if seconds else 0.0
    capped = [median if paused_over and s > paused_over * median else s for s in seconds]
    points, minutes = [], 0.0
    for row, s in zip(rows, capped):
        minutes += s / 60
        points.append((minutes, float(row["val_accuracy"])))
    return points, sum(a != b for a, b in zip(seconds, capped))


def svg(curves: dict[str, list[tuple[float, float]]], goals: list[float], paused_over: float | None = None) -> str:
    longest = max(p[-1][0] for p in curves.values())
    step = next(s for s in (1, 2, 5, 10, 15, 20, 30, 60, 120) if longest / s <= 10)
    x_max = step * (int(longest // step) + 1)
    low = 0.3
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(m):
        return LEFT + plot_w * m / x_max

    def y(a):
        return TOP + plot_h * (1 - (max(a, low) - low) / (1 - low))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{W}" height="{H}" fill="white"/>']
    for tick in range(0, x_max + 1, step):
        out.append(f'<line x1="{x(tick):.1f}" y1="{TOP}" x2="{x(tick):.1f}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{tick}</text>')
    for pct in range(30, 101, 10):
        out.append(f'<line x1="{LEFT}" y1="{y(pct / 100):.1f}" x2="{LEFT + plot_w}" y2="{y(pct / 100):.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(pct / 100) + 4:.1f}" text-anchor="end">{pct}%</text>')
    for goal in goals:
        out.append(f'<line x1="{LEFT}" y1="{y(goal):.1f}" x2="{LEFT + plot_w}" y2="{y(goal):.1f}" stroke="#999" '
                   'stroke-dasharray="5,4"/>')
        out.append(f'<text x="{LEFT + plot_w + 6}" y="{y(goal) + 4:.1f}" fill="#666">{goal:.1%}</text>')
    for n, (label, points) in enumerate(curves.items()):
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{x(m):.1f},{y(a):.1f}" for m, a in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        # the legend, bottom right inside the plot: every curve has risen above it by then
        ly = TOP + plot_h - 16 - 20 * (len(curves) - 1 - n)
        lx = LEFT + plot_w * 0.3
        out.append(f'<line x1="{lx:.1f}" y1="{ly}" x2="{lx + 20:.1f}" y2="{ly}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 26:.1f}" y="{ly + 4}">{escape(label)}</text>')
    paused = f"; epochs over {paused_over:g}x the median counted at it" if paused_over else ""
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{H - 10}" text-anchor="middle">minutes of training '
               f'(cumulative epoch time, 2-core CPU{paused})</text>')
    out.append(f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" transform="rotate(-90 14 '
               f'{TOP + plot_h / 2})">validation accuracy</text>')
    out.append("</svg>")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--out", default="docs/time_to_accuracy.svg")
    parser.add_argument("--goal", type=float, action="append", default=[])
    parser.add_argument("--paused-over", type=float, metavar="F",
                        help="count epochs over F times the run's median at the median")
    args = parser.parse_args()
    curves, changed = {}, {}
    for item in args.runs:
        label, _, path = item.partition("=")
        curves[label], changed[label] = curve(Path(path), args.paused_over)
    for label, points in curves.items():
        note = f" ({changed[label]} paused epochs counted at the median)" if changed[label] else ""
        print(f"{label}: {len(points)} epochs, {points[-1][0]:.1f} min{note}, final {points[-1][1]:.2%}, best "
              f"{max(a for _, a in points):.2%}")
        for goal in args.goal:
            reached = next((m for m, a in points if a >= goal), None)
            print(f"  {goal:.1%} first reached after {reached:.1f} min" if reached else f"  {goal:.1%} not reached")
    Path(args.out).write_text(svg(curves, args.goal, args.paused_over))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
