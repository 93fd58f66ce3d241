"""PNG plots: a fold's training curves and the LR range test. matplotlib without a display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_curves(history: pd.DataFrame, path: Path, title: str, kept: int | None = None) -> None:
    """Train and valid loss, and valid accuracy (a number: its metric), per epoch (the EMA's too, with train.ema; SWA's
    average as the last point); dashed lines where a phase starts, a star on the epoch the fold kept."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(history["epoch"], history["train_loss"], "o-", label="train loss")
    ax_loss.plot(history["epoch"], history["valid_loss"], "o-", label="valid loss")
    # the score beside the loss: accuracy, or a number's metric (valid_rmse, ...)
    second = (
        "valid_accuracy"
        if "valid_accuracy" in history
        else next(c for c in history.columns if c.startswith("valid_") and c != "valid_loss")
    )
    name = second.removeprefix("valid_")
    ax_acc.plot(history["epoch"], history[second], "o-", color="C2", label=f"valid {name}")
    if "ema_valid_loss" in history:
        ax_loss.plot(history["epoch"], history["ema_valid_loss"], "s--", color="C3", label="EMA valid loss")
        ax_acc.plot(history["epoch"], history[f"ema_{second}"], "s--", color="C3", label=f"EMA valid {name}")
    if kept is not None:
        row = history[history["epoch"] == kept].iloc[-1]
        weights = row.get("weights") if isinstance(row.get("weights"), str) else "raw"
        label = f"kept (epoch {kept}{'' if weights == 'raw' else ', ' + weights})"
        loss = row["ema_valid_loss" if weights == "ema" else "valid_loss"]
        ax_loss.plot([kept], [loss], "k*", ms=14, label=label)
    starts = history.groupby("phase")["epoch"].min()
    for ax in (ax_loss, ax_acc):
        for p, epoch in starts.items():
            ax.axvline(epoch - 0.5, color="grey", ls="--", lw=0.8)
            row = history[history["epoch"] == epoch].iloc[0]
            ax.annotate(
                f"phase {p}\n{row['img_size']} px{' frozen' if row['frozen'] else ''}",
                (epoch - 0.45, 1),
                xycoords=("data", "axes fraction"),
                va="top",
                fontsize=7,
            )
        ax.set_xlabel("epoch")
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_lr_find(lrs, smoothed, suggestions: dict[str, float], path: Path, title: str) -> None:
    """Smoothed loss against LR on a log axis, with each suggested LR marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, smoothed, label="smoothed loss")
    ax.set_xscale("log")
    for (name, lr), color in zip(suggestions.items(), ("C1", "C2", "C3")):
        ax.axvline(lr, color=color, ls="--", label=f"{name}: {lr:.1e}")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes, for a page that embeds its images (the run report)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(cm, classes: list[str], title: str) -> bytes:
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    for i in range(n):
        for j in range(n):
            dark = cm[i, j] > cm.max() / 2  # white on the dark cells
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)


def correlation_png(corr, names: list[str], title: str) -> bytes:
    """A correlation matrix with its values written in the cells."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * n, 1.2 + 0.6 * n))
    ax.imshow(corr, cmap="viridis", vmin=min(0.0, float(np.nanmin(corr))), vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            value = "n/a" if np.isnan(corr[i, j]) else f"{corr[i, j]:.3f}"
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="white")
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)


def scatter_png(y, pred, title: str) -> bytes:
    """A number's predictions against the truth, one point per image, with the diagonal (perfect)."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.scatter(y, pred, s=8, alpha=0.5)
    lo, hi = float(min(np.min(y), np.min(pred))), float(max(np.max(y), np.max(pred)))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="predicted = true")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted (OOF)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=9)
    return png_bytes(fig)


def image_grid(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], path: Path, title: str) -> None:
    """Rows of uint8 (H, W, 3) images with a caption under each, a heading over each row (images
    of a row may differ in size: each cell is drawn at its own pixels' aspect)."""
    cols = max(len(cells) for _, cells in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.6 * cols, 1.9 * len(rows)), squeeze=False, layout="constrained"
    )
    for r, (heading, cells) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(cells):
                ax.imshow(cells[c][0], interpolation="nearest")
                ax.set_title(cells[c][1], fontsize=7)
        axes[r, 0].text(
            -0.08, 0.5, heading, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8
        )
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
