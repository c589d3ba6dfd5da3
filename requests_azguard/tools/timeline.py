"""``azguard drill --plot``: a per-request latency timeline with the fault marked.

matplotlib is the optional ``plot`` extra and is imported only here, only
when a plot is asked for.  It draws on an Agg canvas directly (no pyplot), so
no global backend is switched in the calling process.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from .drill_result import DrillResult, SideResult

__all__ = ["PlotUnavailable", "require_matplotlib", "write_timeline"]

_INSTALL_HINT = "pip install 'requests-azguard[plot]'"
_COLOURS = {"plain": "#d95f02", "guarded": "#1b9e77"}


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the install hint if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed ({exc}); "
            f"install the plot extra: {_INSTALL_HINT}"
        ) from None


def write_timeline(result: DrillResult, path: str) -> None:
    """Write a PNG: one panel per side, request start time against latency."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True, sharey=True)
    o = result.options
    all_lat = [r[1] for side in (result.plain, result.guarded) for r in side.records]
    floor = max(min((v for v in all_lat if v > 0), default=1e-4) / 2, 1e-5)
    for ax, name, side in zip(axes, ("plain", "guarded"), (result.plain, result.guarded)):
        _panel(ax, name, side, result.fault_at, floor)
    axes[1].set_xlabel("request start (s since the drill began); a bar spans a slow request's wait")
    axes[0].set_xlim(0, max(o.duration, *(r[0] + r[1] for r in _all(result))) * 1.01)
    timeout = "none" if o.timeout is None else f"{o.timeout[0]:g}s connect / {o.timeout[1]:g}s read"
    fig.suptitle(
        f"azguard drill: {o.fault} fault at t={result.fault_at:.1f}s, {result.flows_hit} flow(s) hit; "
        f"{o.threads} thread(s) per side, {o.method}, timeout {timeout}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, format="png")


def _all(result: DrillResult) -> List[Tuple[float, float, Any]]:
    return [*result.plain.records, *result.guarded.records]


def _panel(ax: Any, name: str, side: SideResult, fault_at: float, floor: float) -> None:
    from matplotlib.ticker import FuncFormatter

    ok = [(r[0], max(r[1], floor)) for r in side.records if r[2] is None]
    bad = [(r[0], max(r[1], floor)) for r in side.records if r[2] is not None]
    summary = side.summary(fault_at)
    if ok:
        ax.scatter(
            [p[0] for p in ok],
            [p[1] for p in ok],
            s=5,
            alpha=0.45,
            color=_COLOURS[name],
            linewidths=0,
            label=f"ok ({len(ok)})",
            rasterized=True,
        )
    if bad:
        ax.scatter(
            [p[0] for p in bad],
            [p[1] for p in bad],
            s=40,
            marker="x",
            color="#c00000",
            linewidths=1.5,
            label=f"failed ({len(bad)})",
            zorder=3,
        )
    # A stall is drawn as a bar from its start to its end, so a request that
    # waited through the fault shows how long it held its thread.
    span = max((r[0] + r[1] for r in side.records), default=1.0)
    for start, lat, err in side.records:
        if lat > span * 0.02:
            ax.hlines(
                max(lat, floor),
                start,
                start + lat,
                color="#c00000" if err is not None else _COLOURS[name],
                linewidth=2,
                alpha=0.6,
                zorder=2,
            )
    ax.axvline(fault_at, color="black", linestyle="--", linewidth=1.2, label="fault")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    ax.set_ylabel("latency (log scale)")
    worst = summary["max_s"]
    ax.set_title(
        f"{name}: {summary['requests']} requests, {summary['failed']} failed, "
        f"p50 {_fmt(summary['p50_s'])}, p99 {_fmt(summary['p99_s'])}, worst {_fmt(worst)}",
        fontsize=10,
        loc="left",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.3g}ms"
    return f"{value:.3g}s"
