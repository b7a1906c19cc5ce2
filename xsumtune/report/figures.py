"""The report's figures as PNG files (matplotlib, Agg): they open anywhere, offline, with no plot server."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from xsumtune.io import atomic_path
from xsumtune.score.plots import LENGTH_BIN, systems

ROUGE_FIGURE_KEYS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
DPI = 100


def rouge_figure(metrics: dict) -> Figure:
    """ROUGE-1/2/L per system, grouped by metric, each bar with its bootstrap 95% interval."""
    figure, axes = _figure()
    by_system = systems(metrics)
    width = 0.8 / len(by_system)
    for index, (label, m) in enumerate(by_system.items()):
        values = [m[key] for key in ROUGE_FIGURE_KEYS]
        below = [m[key] - m["ci95"][key]["low"] for key in ROUGE_FIGURE_KEYS]
        above = [m["ci95"][key]["high"] - m[key] for key in ROUGE_FIGURE_KEYS]
        positions = [group + (index - (len(by_system) - 1) / 2) * width for group in range(len(ROUGE_FIGURE_KEYS))]
        axes.bar(positions, values, width, yerr=[below, above], capsize=3, label=label)
    axes.set_xticks(range(len(ROUGE_FIGURE_KEYS)), list(ROUGE_FIGURE_KEYS.values()))
    axes.set_ylabel("F1 × 100")
    axes.set_title("ROUGE by system (bars: bootstrap 95% interval)")
    axes.legend()
    return figure


def length_figure(histogram: list[dict]) -> Figure:
    """Predictions' and references' lengths in words, side by side per bin (rows of report.length_histogram)."""
    figure, axes = _figure()
    width = LENGTH_BIN * 0.4
    starts = [row["words"] for row in histogram]
    axes.bar([s + width * 0.5 for s in starts], [row["prediction"] for row in histogram], width, label="prediction")
    axes.bar([s + width * 1.5 for s in starts], [row["reference"] for row in histogram], width, label="reference")
    axes.set_xlabel(f"words (bins of {LENGTH_BIN})")
    axes.set_ylabel("summaries")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Summary length")
    axes.legend()
    return figure


def loss_figure(curves: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss against the optimizer step, one line per curve (train, eval)."""
    figure, axes = _figure()
    for label, points in curves.items():
        steps, losses = zip(*points)
        axes.plot(steps, losses, marker="o" if len(points) < 20 else None, label=label)
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("loss")
    axes.set_title("Loss")
    axes.legend()
    return figure


def read_loss_curves(live_plots: str | Path) -> dict[str, list[tuple[int, float]]]:
    """dvclive's train/loss.tsv and eval/loss.tsv under its plots directory, those that exist and hold points."""
    curves = {}
    for name in ("train", "eval"):
        path = Path(live_plots) / name / "loss.tsv"
        if path.exists():
            with path.open(encoding="utf-8", newline="") as handle:
                points = [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(handle, delimiter="\t")]
            if points:
                curves[name] = points
    return curves


def write_figures(metrics: dict, histogram: list[dict], curves: dict, figures_dir: str | Path,
                  report_dir: str | Path) -> dict[str, str]:
    """Each figure there is data for, as PNG in figures_dir; returns {title: its path relative to report_dir}.

    No loss figure when training logged no point (fewer steps than train.logging_steps, no evaluation)."""
    figures = {"ROUGE by system": (rouge_figure, metrics, "rouge.png"),
               "Summary length": (length_figure, histogram, "lengths.png"),
               "Loss": (loss_figure, curves, "loss.png")}
    links = {}
    for title, (draw, data, name) in figures.items():
        if data:
            save_png(draw(data), Path(figures_dir) / name)
            links[title] = Path(os.path.relpath(Path(figures_dir) / name, report_dir)).as_posix()
    return links


def save_png(figure: Figure, path: str | Path) -> None:
    FigureCanvasAgg(figure)  # Agg, whatever backend matplotlib would pick: no display needed
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)


def _figure():
    figure = Figure(figsize=(7, 4), layout="constrained")
    return figure, figure.add_subplot()
