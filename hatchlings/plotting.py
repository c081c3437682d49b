"""The one way hatchlings makes a matplotlib figure (model cards, benchmarks, probes).

A bare `Figure` on the Agg canvas rather than pyplot: it needs no display and leaves the calling process's
matplotlib backend and pyplot figure list alone (a user running a benchmark or a training run from a
notebook keeps their inline plots), and it is freed like any object, with no `plt.close` to forget.
"""

from __future__ import annotations


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6), dpi: int = 110):
    """A Figure of `nrows` x `ncols` panels, each `size` inches, and its (nrows, ncols) array of axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)
