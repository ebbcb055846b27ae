"""Recall-vs-QPS plot of a benchmark's results.json (matplotlib Agg, no global backend).

A separate step from the run: ``plot_results("out/results.json")`` draws
``out/recall_qps.png`` from the file on disk alone (``snapline plot RESULTS_JSON``).
"""
from __future__ import annotations

from pathlib import Path

from bench.fronts import bytes_label, pareto, system_points
from bench.json_records import read_json

__all__ = ["PLOT_FILE", "pareto_front", "plot_recall_qps", "plot_results"]

PLOT_FILE = "recall_qps.png"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both, by increasing recall
    (:func:`bench.fronts.pareto`, the big-ann-benchmarks way)."""
    return pareto(points, recall=lambda p: p[0], qps=lambda p: p[1])


def plot_recall_qps(results: dict, path: str | Path, recall_key: str = "recall@10") -> Path:
    """R@10 (x) against QPS (y, log scale): per system, its Pareto front over all its
    configurations (every nlist, every search parameter), labelled with its bytes per
    vector; every point faintly behind it."""
    # matplotlib loads here, not at import: `snapline bench` imports this module before it
    # spawns the benchmark children, whose peak RSS would then count matplotlib's pages
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "os^Dv<>pX*hP"
    # matplotlib's ten colours, then others (an 11th system drew in snapline's colour)
    palette = [f"C{j}" for j in range(10)] + ["black", "darkgoldenrod", "navy", "lime"]
    by_system = system_points(results, recall_key)
    for i, (system, points) in enumerate(by_system.items()):
        front = pareto(points)
        color = palette[i % len(palette)]
        ax.scatter([p.recall for p in points], [p.qps for p in points], s=6, color=color,
                   alpha=0.25)
        nlists = sorted({p.nlist for p in points if p.nlist is not None})
        label = (f"{system} ({bytes_label(points)}"
                 + (f", nlist {nlists[0]}-{nlists[-1]}" if len(nlists) > 1 else "") + ")")
        ax.plot([p.recall for p in front], [p.qps for p in front], "-",
                marker=markers[i % len(markers)], markersize=4, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(f"{recall_key.replace('recall', 'R')} (true nearest neighbour in the top 10)"
                  if recall_key == "recall@10" else recall_key)
    ax.set_ylabel("queries per second (log scale)")
    ax.set_title(f"{results['dataset']}: {results['code_bytes']} code bytes, "
                 f"threads={results['threads']}, batch of {results.get('n_query', '?')} queries")
    ax.grid(True, which="both", alpha=0.3)
    if by_system:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_results(results_json: str | Path, png: str | Path | None = None) -> Path:
    """Plot a results.json written by bench.runner.run_benchmark; png defaults to
    recall_qps.png beside it. Returns the PNG's path."""
    results_json = Path(results_json)
    results = read_json(results_json)
    missing = [key for key in ("dataset", "code_bytes", "threads", "runs") if key not in results]
    if missing:
        raise ValueError(f"{results_json} is not a benchmark results file: no {missing}")
    return plot_recall_qps(results, results_json.parent / PLOT_FILE if png is None else png)
