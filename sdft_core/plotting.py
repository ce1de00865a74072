"""One look for every figure of the kit: fonts and sizes, a colour, marker and line style per method (the same in
every figure), the methods named as the paper names them, and the helpers every multi-seed figure uses.

- `style()`: a context manager with the kit's matplotlib settings; draw (and save) a figure inside it.
- `method_name(key)`: "sft" → "SFT", "sft_reinvoke" → "SFT + re-invocation", "oracle_rag" → "Oracle RAG", …; a
  label the table does not know is shown as it is.
- `method_colour`, `method_marker`, `method_linestyle`, `colours_for(labels)`: one colour per method, the same in
  every figure (Okabe–Ito, colour-blind safe); labels that are not methods (ablation variants) take the remaining
  colours in order.
- Ranges: `PERCENT` (accuracies in %), `FRACTION` (in [0, 1]), `NON_NEGATIVE` (a KL divergence), `UNBOUNDED`.
- `clipped_errors` / `draw_interval`: a 95% CI drawn as an error bar cut at the metric's range (a 3-seed Student-t
  interval of an accuracy near 100% reaches far past it; the mean ± half-width stays in the tables).
- `draw_seeds`: every seed's value as a small dot beside the mean.
- `limit_axis`: the axis shows the metric's range at most (plus a small margin), never −70% or 190%.
- `n_label`: "n = 3 seeds × 40 items" for titles and captions; `caption(fig, text)`: a note under the figure
  (what the bars, whiskers and dots are).
- `label_points`: text beside scatter points (e.g. learning rates), moved apart where points crowd, with a leader
  line to a moved label; `coincident`: the points drawn on top of one another, to say so in the caption.
- `save_figure`: <stem>.png and <stem>.pdf, written atomically and without a date stamp (a figure regenerated from the
  same numbers is the same file).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sdft_core.io import atomic_write

# --- Ranges -----------------------------------------------------------------------------------------------------------
PERCENT = (0.0, 100.0)
FRACTION = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
UNBOUNDED = (-math.inf, math.inf)

# --- Style ------------------------------------------------------------------------------------------------------------
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "0.88",
    "grid.linewidth": 0.7,
    "lines.linewidth": 1.6,
    "lines.markersize": 6,
    "errorbar.capsize": 3,
    "savefig.dpi": 150,
}

# The paper's names. Keys are the kit's method names (TrainConfig.method, the plans' row labels); a few row labels
# that already read well map to the same method so that they get its colour.
METHOD_NAMES = {
    "base": "base model",
    "sft": "SFT",
    "sdft": "SDFT",
    "dft": "DFT",
    "cpt": "CPT",
    "oracle_rag": "Oracle RAG",
    "sft_reinvoke": "SFT + re-invocation",
    "sdft_lora": "SDFT (LoRA)",
    "sdft_as_written": "SDFT (as written)",
    "offline_distill": "offline distillation",
    "sft_teacher_samples": "SFT on teacher samples",
}
ALIASES = {"base model": "base", "sdft (on-policy)": "sdft", "oracle rag": "oracle_rag",
           "sft + re-invocation": "sft_reinvoke", "sdft (lora)": "sdft_lora", "sdft (as written)": "sdft_as_written",
           "offline distillation": "offline_distill", "sft on teacher samples": "sft_teacher_samples"}
METHOD_COLOURS = {
    "base": "#595959",  # dark grey
    "sft": "#D55E00",  # vermillion
    "sdft": "#0072B2",  # blue
    "dft": "#009E73",  # bluish green
    "sft_reinvoke": "#E69F00",  # orange
    "cpt": "#CC79A7",  # reddish purple
    "oracle_rag": "#56B4E9",  # sky blue
    "sdft_lora": "#6A3D9A",  # purple
    "sdft_as_written": "#004C7A",  # dark blue
    "offline_distill": "#8C6D31",  # brown
    "sft_teacher_samples": "#B2182B",  # dark red
}
# For labels that are not methods (ablation variants, teacher contexts): taken in order, skipping the colours of the
# methods in the same figure.
OTHER_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D31", "#6A3D9A", "#595959")
METHOD_MARKERS = {"base": "o", "sft": "s", "sdft": "D", "dft": "^", "sft_reinvoke": "v", "cpt": "P",
                  "oracle_rag": "X", "sdft_lora": "d", "sdft_as_written": "p", "offline_distill": "h",
                  "sft_teacher_samples": "<"}
# A signed quantity (a reward, a change): the two ends of the RdBu colour map the token heat maps use.
SIGN_COLOURS = {"positive": "#2166AC", "negative": "#B2182B"}
METHOD_LINESTYLES = {"base": (0, (4, 2)), "sft": "-", "sdft": "-", "dft": "-.", "sft_reinvoke": ":"}


@contextmanager
def style():
    """The kit's matplotlib settings for what is drawn inside (fonts, sizes, grid, no top/right spines)."""
    with plt.rc_context(STYLE):
        yield


def method_key(label: str) -> str | None:
    """The method a label names ("sft", "SFT", "SDFT (on-policy)" → "sdft"), or None."""
    lowered = str(label).strip().lower()
    if lowered in METHOD_NAMES:
        return lowered
    if lowered in ALIASES:
        return ALIASES[lowered]
    by_name = {name.lower(): key for key, name in METHOD_NAMES.items()}
    return by_name.get(lowered)


def method_name(label: str) -> str:
    """The paper's name of a method key ("sft_reinvoke" → "SFT + re-invocation", "base" → "base model"); any other
    label ("SDFT (on-policy)", "frozen base") unchanged."""
    return METHOD_NAMES.get(str(label), str(label))


def method_colour(label: str, default: str = "#595959") -> str:
    key = method_key(label)
    return METHOD_COLOURS[key] if key else default


def method_marker(label: str, default: str = "o") -> str:
    key = method_key(label)
    return METHOD_MARKERS.get(key, default) if key else default


def method_linestyle(label: str, default="-"):
    key = method_key(label)
    return METHOD_LINESTYLES.get(key, default) if key else default


def colours_for(labels: Iterable[str]) -> dict[str, str]:
    """A colour per label: a method's own colour, else the next of OTHER_COLOURS not used by a method here."""
    labels = list(dict.fromkeys(labels))
    taken = {METHOD_COLOURS[key] for key in map(method_key, labels) if key}
    spare = iter([c for c in OTHER_COLOURS if c not in taken] + list(OTHER_COLOURS) * 4)
    return {label: METHOD_COLOURS[method_key(label)] if method_key(label) else next(spare) for label in labels}


# --- Intervals and seeds ----------------------------------------------------------------------------------------------

def clipped_errors(means: Sequence[float], half_widths: Sequence[float] | None,
                   bounds: tuple[float, float] = UNBOUNDED) -> np.ndarray:
    """Error-bar lengths (2 × n: below, above) of mean ± half_width cut at `bounds`; a NaN half-width (one seed)
    gives no bar."""
    means = np.asarray(means, dtype=float)
    widths = np.zeros_like(means) if half_widths is None else np.asarray(half_widths, dtype=float)
    widths = np.where(np.isnan(widths), 0.0, widths)
    low = np.clip(means - widths, *bounds)
    high = np.clip(means + widths, *bounds)
    return np.vstack([np.maximum(means - low, 0.0), np.maximum(high - means, 0.0)])


def draw_interval(ax, x, means, half_widths, bounds: tuple[float, float] = UNBOUNDED, horizontal: bool = False,
                  colour="black", **kwargs):
    """mean ± half_width as error bars (vertical, or horizontal where `horizontal`: then x holds the y positions),
    cut at `bounds`; no marker, and nothing where the half-width is NaN (one seed). Returns the ErrorbarContainer,
    or None where no half-width is known."""
    if half_widths is None:
        return None
    known = ~np.isnan(np.asarray(half_widths, dtype=float))
    if not known.any():
        return None
    x, means = np.asarray(x, dtype=float)[known], np.asarray(means, dtype=float)[known]
    errors = clipped_errors(means, np.asarray(half_widths, dtype=float)[known], bounds)
    options = {"fmt": "none", "ecolor": colour, "elinewidth": 1.1, "capsize": 3, "zorder": 3, **kwargs}
    if horizontal:
        return ax.errorbar(means, x, xerr=errors, **options)
    return ax.errorbar(x, means, yerr=errors, **options)


def draw_seeds(ax, x, values_per_point: Sequence[Sequence[float]], colour="black", spread: float = 0.0,
               horizontal: bool = False, label: str | None = None, **kwargs):
    """Each point's per-seed values as small dots at x (spread: total width over which a point's dots are fanned
    out, so that equal values stay visible). Points with one value or none draw nothing."""
    xs, ys = [], []
    for position, values in zip(x, values_per_point):
        values = [v for v in values if v is not None and not math.isnan(v)]
        if len(values) < 2:
            continue
        offsets = np.linspace(-spread / 2, spread / 2, len(values)) if spread else np.zeros(len(values))
        xs += list(position + offsets)
        ys += values
    if not xs:
        return None
    options = {"s": 14, "color": colour, "alpha": 0.75, "edgecolors": "white", "linewidths": 0.4, "zorder": 4,
               **kwargs}
    return ax.scatter(ys if horizontal else xs, xs if horizontal else ys, label=label, **options)


def limit_axis(ax, bounds: tuple[float, float], which: str = "y", margin: float = 0.04,
               full: bool = False) -> None:
    """Keep the axis within the metric's range (plus `margin` of that range, so that marks on the bounds show):
    the current limits cut at it, or the whole range where `full`."""
    get, set_ = (ax.get_ylim, ax.set_ylim) if which == "y" else (ax.get_xlim, ax.set_xlim)
    low, high = bounds
    current = get()
    if math.isfinite(low) and math.isfinite(high):
        pad = margin * (high - low)
        new = (low - pad, high + pad) if full else (max(current[0], low - pad), min(current[1], high + pad))
    else:
        pad = margin * (current[1] - current[0])
        new = (max(current[0], low - pad) if math.isfinite(low) else current[0],
               min(current[1], high + pad) if math.isfinite(high) else current[1])
    set_(*new)


def count_text(items: int | Sequence[int] | None) -> str | None:
    """40 → "40"; [40, 40, 16] → "16–40"; None or [] → None."""
    if items is None or isinstance(items, (int, np.integer)):
        return None if items is None else str(int(items))
    counts = sorted({int(i) for i in items if i is not None and not (isinstance(i, float) and math.isnan(i))})
    return None if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def n_label(seeds: int | None = None, items: int | Sequence[int] | None = None, item_word: str = "items") -> str:
    """"n = 3 seeds × 40 items"; items may be one count or several ("16–40 items"); None leaves a part out."""
    parts = []
    if seeds:
        parts.append(f"{seeds} seed{'s' if seeds != 1 else ''}")
    if (count := count_text(items)) is not None:
        parts.append(f"{count} {item_word}")
    return "n = " + " × ".join(parts) if parts else ""


def caption(fig, text: str, fontsize: float = 8.0) -> None:
    """`text` in small grey type under the figure, wrapped to its width (saved with it: save_figure crops to what
    is drawn)."""
    width = max(40, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    wrapped = "\n".join(textwrap.fill(line, width) for line in text.split("\n"))
    fig.text(0.01, -0.01, wrapped, ha="left", va="top", fontsize=fontsize, color="0.3")


def coincident(points: dict[str, tuple[float, float]], tolerance: float = 1e-9) -> list[list[str]]:
    """Groups of labels whose points are equal (within `tolerance` on both coordinates)."""
    groups: list[list[str]] = []
    for label, (x, y) in points.items():
        for group in groups:
            gx, gy = points[group[0]]
            if abs(gx - x) <= tolerance and abs(gy - y) <= tolerance:
                group.append(label)
                break
        else:
            groups.append([label])
    return [group for group in groups if len(group) > 1]


def label_points(ax, points: Sequence[tuple[float, float, str, str]], fontsize: float = 7.5) -> None:
    """Write each (x, y, text, colour) just above and to the right of its point; a label that would overlap one
    already written moves down in steps of a line (up where it would leave the axes) and gets a thin line to its
    point. Call once the axis limits and the layout are final."""
    to_points = 72.0 / ax.figure.dpi
    line = 1.25 * fontsize
    placed: list[tuple[float, float, float]] = []  # (x, y, width) of written labels, in points
    bottom = ax.transData.transform((0, ax.get_ylim()[0]))[1] * to_points
    for x, y, text, colour in sorted(points, key=lambda p: (-p[1], p[0])):
        px, py = (value * to_points for value in ax.transData.transform((x, y)))
        width = 0.62 * fontsize * len(text)
        dx, dy = 4.0, 3.0

        def clashes(dy: float) -> bool:
            return any(abs(py + dy - qy) < line and px + dx < qx + qw and qx < px + dx + width for qx, qy, qw in placed)

        step = 0
        while clashes(dy):
            step += 1
            down = 3.0 - step * line
            dy = down if py + down > bottom + line else 3.0 + step * line
        placed.append((px + dx, py + dy, width))
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, color=colour,
                    ha="left", va="bottom", zorder=6,
                    arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.5, "alpha": 0.7, "shrinkA": 0,
                                "shrinkB": 3} if step else None)


def learning_rate_label(rate: float) -> str:
    """1e-4 → "lr 1e-4", 3e-05 → "lr 3e-5"."""
    mantissa, exponent = f"{rate:.0e}".split("e")
    return f"lr {mantissa}e{int(exponent)}"


def learning_rate_of(label: str) -> float | None:
    """The learning rate a run name carries ("extraction_sft_lr0.0003_reinvoke" → 3e-4), or None."""
    found = re.search(r"(?:^|_)lr(\d+(?:\.\d+)?(?:e-?\d+)?)(?=_|$)", str(label))
    return float(found.group(1)) if found else None


# --- Saving -----------------------------------------------------------------------------------------------------------

def save_figure(fig, path_stem: str | Path) -> None:
    """A matplotlib figure as <path_stem>.png and .pdf (each written atomically; no creation date in the PDF, so that
    the same figure gives the same file)."""
    for suffix, metadata in (("png", {}), ("pdf", {"CreationDate": None})):
        atomic_write(f"{path_stem}.{suffix}", lambda tmp, suffix=suffix, metadata=metadata: fig.savefig(
            tmp, format=suffix, bbox_inches="tight", dpi=150, metadata=metadata))
