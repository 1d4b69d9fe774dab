"""Report figures as base64 PNG strings (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402

from depthdata.eda.scan import Thumb  # noqa: E402


def to_base64(fig: plt.Figure) -> str:
    """PNG bytes of ``fig`` as base64 text (for ``<img src="data:image/png;base64,...">``); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def binned_histogram(bins: np.ndarray, counts: dict[str, np.ndarray], xlabel: str, log_x: bool) -> str:
    """Pre-binned counts of several groups as step lines, normalised to fractions per group."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, c in counts.items():
        total = c.sum()
        if total:
            ax.stairs(c / total, bins, label=f"{name} ({total:,} px)")
    if log_x:
        ax.set_xscale("log")
        # ticks at 1-2-5 steps in plain numbers: readable over a narrow range such as 2–6 m
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    used = np.flatnonzero(np.sum(list(counts.values()), axis=0)) if counts else np.zeros(0, int)
    if used.size:  # zoom on the occupied bins, one bin of margin each side
        ax.set_xlim(bins[max(used[0] - 1, 0)], bins[min(used[-1] + 2, len(bins) - 1)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of pixels")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_base64(fig)


def value_histogram(values: dict[str, np.ndarray], xlabel: str, bins: int | np.ndarray = 30) -> str:
    """Distribution of one per-sample statistic, one outline per group (PNG, base64)."""
    return to_base64(value_histogram_figure(values, xlabel, bins))


def value_histogram_figure(values: dict[str, np.ndarray], xlabel: str, bins: int | np.ndarray = 30) -> plt.Figure:
    """The figure of :func:`value_histogram`."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    finite = {k: v[np.isfinite(v)] for k, v in values.items()}
    allv = np.concatenate([v for v in finite.values()] or [np.zeros(0)])
    if isinstance(bins, int) and allv.size:
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:  # one value (a one-sample group): a readable window around it, not 1e-6 wide
            pad = max(abs(lo) * 0.05, 1e-3)
            lo, hi = lo - pad, hi + pad
        bins = np.linspace(lo, hi, bins + 1)
    for name, v in finite.items():
        if v.size:
            ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=f"{name} ({v.size} samples)")
    # plain tick labels: no "+2.3457" offset text that makes a narrow range unreadable
    ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    if allv.size:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def sample_grid(thumbs: list[Thumb], title: str) -> str:
    """Rows of samples, columns rgb | depth | teacher | sparse (only the stored ones).

    Depth and sparse share a turbo colour map in metres over the sample's 2–98th depth
    percentiles; the teacher uses magma over [0, 1] (bright = near); holes are black.
    """
    columns = [c for c in ("rgb", "depth", "teacher", "sparse") if any(getattr(t, c) is not None for t in thumbs)]
    n = len(thumbs)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.6 * len(columns), 2.1 * n + 0.4), squeeze=False)
    fig.suptitle(title)
    turbo = matplotlib.colormaps["turbo"].with_extremes(bad="black", under="black")
    magma = matplotlib.colormaps["magma"].with_extremes(bad="black")
    for r, t in enumerate(thumbs):
        ref = t.depth if t.depth is not None else t.sparse
        valid = ref[np.isfinite(ref) & (ref > 0)] if ref is not None else np.zeros(0)
        vmin, vmax = (np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0))
        vmax = max(vmax, vmin + 1e-3)
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            a = getattr(t, name)
            if r == 0:
                ax.set_title({"rgb": "rgb", "depth": "depth (m)", "teacher": "teacher (disparity)",
                              "sparse": "sparse (m)"}[name], fontsize=9)
            if c == 0:
                ax.set_ylabel(t.sample_id.rsplit("/", 1)[-1][:24], fontsize=7)
            if a is None:
                ax.set_facecolor("lightgrey")
                continue
            if name == "rgb":
                ax.imshow(a)
            elif name == "teacher":
                ax.imshow(np.asarray(a, np.float32), cmap=magma, vmin=0, vmax=1)
            else:
                img = np.where(np.asarray(a) > 0, a, np.nan)
                im = ax.imshow(img, cmap=turbo, vmin=vmin, vmax=vmax)
                if name == "depth" or "depth" not in columns:
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=8)
    fig.tight_layout()
    return to_base64(fig)
