"""`bench --plot`: the per-agent timelines of both modes side by side — the guide's point in one picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..bench import BenchResult
from ..errors import SetupError


def pyplot() -> Any:
    """matplotlib's pyplot on a file-only backend; SetupError naming the extra when it is missing. `bench` calls it
    before the benchmark, so a missing extra costs nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SetupError(f"--plot needs matplotlib ({exc}): pip install 'parallama[plot]'") from exc
    return plt


def plot_timelines(result: BenchResult, path: str | Path) -> None:
    """Write a PNG: one horizontal bar per agent from request to last token, sequential left, parallel right."""
    plt = pyplot()
    modes = [("sequential", result.sequential.makespan_s), ("parallel", result.parallel.makespan_s)]
    agents = [a.name for a in result.sequential.agents]
    right = max(max((s.end_s for s in result.timelines[m]), default=0) for m, _ in modes) * 1.05 or 1
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.5 * len(agents)), sharey=True)
    for ax, (mode, makespan) in zip(axes, modes):
        for row, span in enumerate(result.timelines[mode]):
            color = "#4c9be8" if span.ok else "#d9534f"
            ax.barh(row, span.end_s - span.sent_s, left=span.sent_s, color=color, height=0.6)
            if span.first_token_s is not None:
                ax.plot([span.first_token_s] * 2, [row - 0.3, row + 0.3], color="black", linewidth=1)
        ax.set_title(f"{mode}: {makespan:.2f} s (median)")
        ax.set_xlim(0, right)
        ax.set_xlabel("seconds")
    axes[0].invert_yaxis()  # the axes share y: invert once, first agent on top
    axes[0].set_yticks(range(len(agents)), labels=agents)
    fig.suptitle(f"speedup {result.speedup:.2f}× (the slot layout allows {result.ideal_speedup:.2f}×) — "
                 "bar: request to last token; tick: first token")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
