"""Tables and figures from evaluation results (Markdown + CSV tables, PNG + PDF figures).

Wherever a table takes an evaluation name it also takes a list of names, one per training seed (<name>,
<name>_seed1, …): the cell is then the mean over seeds, a column "<metric> ± 95% CI" beside it holds the Student-t
half-width (paper B.2: "3 random seeds … mean performance"), and columns "<metric> seed0", "<metric> seed1", … hold
each seed's own value (a row evaluated once, e.g. the base model, has its one value under seed0 and NaN elsewhere).
One name everywhere gives the plain number and neither. The CSV keeps every column; the Markdown shows a row's
per-seed values in one column, "<metric> per seed" ("21.67 / 15.00 / 28.33"), empty for a row with one value.

Figures draw in the kit's style (sdft_core.plotting): the paper's method names and one colour per method across
figures, bars or points at the mean, whiskers for the 95% CI cut at the metric's range (accuracies [0, 100] %, KL
≥ 0: a 3-seed interval can reach far past them), one dot per seed, and n (seeds × items) in the title.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from experiments.layout import result_path, run_dir, seeded, sequential_eval
from sdft_core.data import Task
from sdft_core.eval.evaluate import score_items
from sdft_core.eval.stats import MeanCI, mean_ci
from sdft_core.io import read_json, write_text
from sdft_core.plotting import (NON_NEGATIVE, PERCENT, caption, clipped_errors, coincident, colours_for, count_text,
                                draw_interval, draw_seeds, label_points, learning_rate_label, learning_rate_of,
                                limit_axis, method_colour, method_linestyle, method_marker, method_name, n_label,
                                save_figure, style)

Names = str | list[str]  # one evaluation, or one per seed
CI = " ± 95% CI"
SEED = " seed"  # per-seed columns: f"{metric}{SEED}{seed}", e.g. "correct seed2"
PER_SEED = " per seed"  # the Markdown's one column of per-seed values
WHISKERS = "whiskers: 95% CI over seeds (Student t), cut at the metric's range; dots: one per seed"

KNOWLEDGE_COLUMNS = {"strict": "Acc. (strict)", "lenient": "Acc. (lenient)", "ood_strict": "OOD Acc. (strict)",
                     "ood_lenient": "OOD Acc. (lenient)", "kl_to_base": "KL to base (nats)",
                     "top1_agreement": "Top-1 agreement with base"}

# The paper's numbers, shown beside ours. Table 1 (Qwen2.5-7B-Instruct, knowledge acquisition; OOD is one number).
PAPER_TABLE1 = {"base": (0, 0, 0), "oracle_rag": (91, 100, 100), "cpt": (9, 37, 7), "sft": (80, 95, 80),
                "sdft": (89, 100, 98)}
PAPER_FIG2 = {"SFT model": 1.26, "demonstration-conditioned teacher": 0.68}  # KL to the base policy, nats
PAPER_FIG7 = {"text": 75, "both": 89}  # strict accuracy; the answer-only bar has no number in the text
PAPER_TABLE2 = {"base": (31.2, 4612), "sft": (23.5, 3273), "sdft": (43.7, 4180)}  # Olmo-3-7B-Think, medical
# Table 5, tool use (the new task of the tiny profile's Pareto plot is a stand-in; see the notebook).
PAPER_TABLE5_TOOL_USE = {"base": (42.9, 65.5), "sft": (63.2, 56.0), "sft_reinvoke": (63.1, 63.7),
                         "dft": (64.2, 60.8), "sdft": (70.6, 65.4)}


@dataclass(frozen=True)
class SeedMean(MeanCI):
    """A mean over seeds with its 95% CI (MeanCI), and the seeds and values it came from."""

    seeds: tuple[int, ...] = ()
    values: tuple[float, ...] = ()


def seed_of(name: str) -> int:
    """The training seed of a run or result name (layout.seeded): <name>_seed<s>, else 0."""
    found = re.search(r"_seed(\d+)$", name)
    return int(found.group(1)) if found else 0


def seed_mean(values: list[float], names: list[str]) -> SeedMean:
    """mean_ci of one value per name, keeping each value with its name's seed."""
    ci = mean_ci(values)
    return SeedMean(ci.mean, ci.half_width, ci.n, ci.confidence, tuple(seed_of(n) for n in names),
                    tuple(float(v) for v in values))


def read_eval(results_dir: str | Path, name: str) -> dict:
    return read_json(result_path(results_dir, "eval", name))


def as_list(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def over_seeds(results_dir: str | Path, names: Names, value: Callable[[dict], float], folder: str = "eval") -> SeedMean:
    """Mean and 95% CI of `value(result)` over <folder>/<name>.json of every seed (folder: one of RESULT_KINDS), with
    the per-seed values."""
    names = as_list(names)
    return seed_mean([value(read_json(result_path(results_dir, folder, name))) for name in names], names)


def items_of(results_dir: str | Path, names: Names, split: str, folder: str = "eval",
             key: str = "n") -> list[int]:
    """The number of items each evaluation scored on `split` (result[split][key], a count or the list of items;
    split "": the result's top level; absent: none)."""
    counts = []
    for name in as_list(names):
        result = read_json(result_path(results_dir, folder, name))
        part = result.get(split, result) if split else result
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, (int, list)) and not isinstance(value, bool):
            counts.append(value if isinstance(value, int) else len(value))
    return counts


def seed_table(rows: dict[str, dict[str, MeanCI | float]], index_name: str = "model") -> pd.DataFrame:
    """A table of means; where any row of a column averages several seeds, its CI column follows it (NaN for a row
    with one seed), then one column per seed ("<column> seed<s>"). Plain floats (e.g. the paper's numbers) pass
    through."""
    names = list(dict.fromkeys(column for row in rows.values() for column in row))
    columns: dict[str, dict] = {}
    for column in names:
        cells = {label: row[column] for label, row in rows.items() if column in row}
        columns[column] = {label: c.mean if isinstance(c, MeanCI) else c for label, c in cells.items()}
        if any(isinstance(c, MeanCI) and c.n > 1 for c in cells.values()):
            columns[column + CI] = {label: c.half_width for label, c in cells.items() if isinstance(c, MeanCI)}
            by_seed = {label: dict(zip(c.seeds, c.values)) for label, c in cells.items() if isinstance(c, SeedMean)}
            for seed in sorted({s for values in by_seed.values() for s in values}):
                columns[f"{column}{SEED}{seed}"] = {label: values.get(seed, math.nan)
                                                    for label, values in by_seed.items()}
    frame = pd.DataFrame(columns, index=list(rows))
    frame.index.name = index_name
    return frame


# --- Reading the tables back: per-seed columns ----------------------------------------------------------------------

def seed_columns(table: pd.DataFrame, metric: str) -> list[str]:
    """The per-seed columns of `metric`, in seed order."""
    pattern = re.compile(re.escape(f"{metric}{SEED}") + r"(\d+)")
    found = [(int(m.group(1)), c) for c in table.columns if isinstance(c, str) and (m := pattern.fullmatch(c))]
    return [column for _, column in sorted(found)]


def per_seed(table: pd.DataFrame, metric: str) -> list[list[float]]:
    """Each row's per-seed values of `metric` (NaNs left out; a row without per-seed columns: its mean alone)."""
    columns = seed_columns(table, metric)
    if not columns:
        return [[float(v)] for v in table[metric]]
    return [[float(v) for v in row if not pd.isna(v)] for row in table[columns].itertuples(index=False)]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The columns that are neither a CI nor a per-seed column."""
    seeds = {c for metric in table.columns for c in seed_columns(table, metric)}
    return [c for c in table.columns if not str(c).endswith(CI) and c not in seeds]


def seeds_note(table: pd.DataFrame, metric: str) -> tuple[int, list[str]]:
    """(most seeds of any row, the rows with a single value) for `metric`."""
    counts = {label: len(values) for label, values in zip(table.index, per_seed(table, metric))}
    most = max(counts.values(), default=1)
    return most, [str(label) for label, count in counts.items() if count == 1 and most > 1]


def _single_note(labels: list[str]) -> str:
    """The caption's words for rows with one value: no seeds to average, so no whisker and no dots."""
    names = list(dict.fromkeys(method_name(label) for label in labels))
    return f" A single run, so no whisker: {', '.join(names)}." if names else ""


def markdown_table(table: pd.DataFrame, digits: int = 2) -> str:
    """The table as Markdown, each metric's per-seed columns folded into one "<metric> per seed" column."""
    shown = table.copy()
    for metric in metric_columns(table):
        columns = seed_columns(table, metric)
        if not columns:
            continue
        folded = [" / ".join(f"{v:.{digits}f}" for v in row if not pd.isna(v))
                  if sum(not pd.isna(v) for v in row) > 1 else "" for row in table[columns].itertuples(index=False)]
        position = list(shown.columns).index(columns[0])
        shown = shown.drop(columns=columns)
        shown.insert(position, f"{metric}{PER_SEED}", folded)
    for column in shown.columns:  # small numbers (a learning rate) would round to 0: written as they are
        values = pd.to_numeric(shown[column], errors="coerce") if shown[column].dtype != object else None
        if values is not None and values.notna().any() and 0 < values.abs().max() < 10 ** -digits * 10:
            shown[column] = [f"{v:g}" if not pd.isna(v) else "" for v in values]
    return shown.round(digits).to_markdown() + "\n"


def save_table(table: pd.DataFrame, path_stem: str | Path, digits: int = 2) -> None:
    """<stem>.csv (every column, per-seed ones included) and <stem>.md (`markdown_table`)."""
    write_text(f"{path_stem}.csv", table.to_csv())
    write_text(f"{path_stem}.md", markdown_table(table, digits))


# --- Table 1: knowledge acquisition -------------------------------------------------------------------------------

def knowledge_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Table 1 layout: accuracies in %, one row per label (label → evaluation name, or one per seed), the
    forgetting measures where they were measured, and the paper's numbers beside ours. attrs["items"]: the number of
    questions per split ({"test": [...], "ood": [...]})."""
    table = {}
    items: dict[str, list[int]] = {"test": [], "ood": []}
    for label, names in rows.items():
        def metric(split, key, scale=100.0):
            return over_seeds(results_dir, names, lambda result: scale * result[split][key])

        row = {KNOWLEDGE_COLUMNS[f"{prefix}{key}"]: metric(split, key)
               for split, prefix in (("test", ""), ("ood", "ood_")) for key in ("strict", "lenient")}
        if "forgetting" in read_eval(results_dir, as_list(names)[0]):
            row.update({KNOWLEDGE_COLUMNS[key]: metric("forgetting", key, 1.0)
                        for key in ("kl_to_base", "top1_agreement")})
        if label in PAPER_TABLE1:
            row.update({"paper strict": PAPER_TABLE1[label][0], "paper lenient": PAPER_TABLE1[label][1],
                        "paper OOD": PAPER_TABLE1[label][2]})
        table[label] = row
        for split in items:
            items[split] += items_of(results_dir, names, split)
    frame = seed_table(table)
    frame.attrs["items"] = items
    return frame


def _bar_positions(groups: int, bars: int, width: float = 0.8) -> tuple[np.ndarray, float]:
    """x of every bar (groups × bars) in grouped bars, and the bar width."""
    bar = width / bars
    return np.arange(groups)[:, None] + (np.arange(bars) - (bars - 1) / 2)[None, :] * bar, bar


def _grouped_bars(ax, table: pd.DataFrame, metrics: list[str], bounds, colours: dict[str, str],
                  paper: dict[str, str] | None = None) -> None:
    """Bars per (metric, row), the CI whiskers cut at `bounds`, the seeds' dots, the paper's numbers as diamonds."""
    positions, bar = _bar_positions(len(metrics), len(table))
    labels = list(table.index)
    for j, label in enumerate(labels):
        x = positions[:, j]
        means = [float(table.loc[label, m]) for m in metrics]
        ax.bar(x, means, bar * 0.92, color=colours[label], label=method_name(label), zorder=2)
        widths = [float(table.loc[label, m + CI]) if m + CI in table else math.nan for m in metrics]
        draw_interval(ax, x, means, widths, bounds)
        draw_seeds(ax, x, [per_seed(table.loc[[label]], m)[0] for m in metrics], colour="black",
                   spread=bar * 0.45, s=9, alpha=0.6)
        if paper:
            values = [table.loc[label, paper[m]] if paper.get(m) in table else math.nan for m in metrics]
            if not all(pd.isna(v) for v in values):
                shown = "paper (Qwen2.5-7B-Instruct)" in ax.get_legend_handles_labels()[1]
                ax.scatter(x, values, marker="D", s=22, facecolor="white", edgecolor="black", linewidth=0.9,
                           zorder=5, label=None if shown else "paper (Qwen2.5-7B-Instruct)")
    ax.set_xticks(range(len(metrics)), metrics)


def plot_knowledge_table(table: pd.DataFrame, path_stem: str | Path, title: str = "Knowledge acquisition"):
    """Left: strict, lenient and OOD strict accuracy per model (bars: mean over seeds; whiskers: 95% CI cut at
    [0, 100]; dots: seeds; diamonds: the paper's Qwen2.5-7B numbers). Right, where measured: the forgetting measure
    KL(model ‖ base) per model, whiskers cut at 0."""
    metrics = [KNOWLEDGE_COLUMNS[c] for c in ("strict", "lenient", "ood_strict")]
    kl = KNOWLEDGE_COLUMNS["kl_to_base"]
    forgetting = table[table[kl].notna()] if kl in table else table.iloc[:0]
    colours = colours_for(table.index)
    seeds, single = seeds_note(table, metrics[0])
    items = table.attrs.get("items", {})
    with style():
        fig, axes = plt.subplots(1, 2 if len(forgetting) else 1, figsize=(11, 4.0), squeeze=False,
                                 gridspec_kw={"width_ratios": [3, 1.3] if len(forgetting) else [1]})
        ax = axes[0][0]
        _grouped_bars(ax, table, metrics, PERCENT, colours,
                      {KNOWLEDGE_COLUMNS["strict"]: "paper strict", KNOWLEDGE_COLUMNS["lenient"]: "paper lenient",
                       KNOWLEDGE_COLUMNS["ood_strict"]: "paper OOD"})
        limit_axis(ax, PERCENT, full=True)
        ax.set_ylabel("accuracy (%)")
        questions = " / ".join(f"{count_text(counts)} {split.replace('ood', 'OOD')}"
                               for split, counts in items.items() if counts)
        ax.set_title(f"{title}\n{n_label(seeds)}" + (f"; {questions} questions" if questions else ""))
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: names[i].startswith("paper"))  # the paper's diamonds last
        ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper center",
                  bbox_to_anchor=(0.5, -0.1), ncol=min(len(names), 7))
        if len(forgetting):
            right = axes[0][1]
            x = np.arange(len(forgetting))
            means = forgetting[kl].astype(float).values
            right.bar(x, means, 0.7, color=[colours[label] for label in forgetting.index], zorder=2)
            draw_interval(right, x, means, forgetting[kl + CI].values if kl + CI in forgetting else None,
                          NON_NEGATIVE)
            draw_seeds(right, x, per_seed(forgetting, kl), colour="black", spread=0.3, s=9, alpha=0.6)
            right.set_xticks(x, [method_name(label) for label in forgetting.index], rotation=20, ha="right")
            right.set_ylim(bottom=0)
            right.set_ylabel("KL(model ‖ base), nats")
            right.set_title("Forgetting: distance to the base model")
        note = f"Bars: mean over seeds; {WHISKERS}." if seeds > 1 else \
            "One training seed: every bar is a single evaluation (no interval)."
        if seeds > 1 and single:
            note += _single_note(single)
        if (table[metrics].astype(float) == 0).any().any():
            note += " A missing bar is 0%."
        fig.tight_layout()
        caption(fig, note)
        save_figure(fig, path_stem)
    return fig


# --- Comparisons (Fig. 6, 7, 8, A.1) ------------------------------------------------------------------------------

def comparison_table(results_dir: str | Path, rows: dict[str, Names], split: str = "test",
                     metrics: tuple[str, ...] = ("correct",), paper: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per label (label → evaluation name, or one per seed): the split's metrics in %, and the paper's
    number if given. attrs["items"]: the number of items each evaluation scored."""
    table = {}
    items = []
    for label, names in rows.items():
        table[label] = {metric: over_seeds(results_dir, names, lambda result, m=metric: 100 * result[split][m])
                        for metric in metrics}
        if paper:
            table[label]["paper"] = paper.get(label, float("nan"))
        items += items_of(results_dir, names, split)
    frame = seed_table(table)
    frame.attrs["items"] = items
    return frame


def teacher_samples_table(results_dir: str | Path, rows: dict[str, Names], task: Task) -> pd.DataFrame:
    """Fig. 6's diagnostic: the teacher samples an offline method trains on (runs/<run>/teacher_samples.json, one per
    training prompt), scored as answers to those prompts (task.eval_splits["train"]), in %, mean ± 95% CI over the
    runs of a label (one per seed) and each run's value; "ran to the token budget": samples as long as the run's
    max_new_tokens. SFT on teacher samples learns what they hold: where they miss the format, no offline use of the
    teacher can find it."""
    items = {item.id: item for item in task.eval_splits["train"]}
    table = {}
    for label, runs in rows.items():
        per_run = []
        for run in as_list(runs):
            path = run_dir(results_dir, run) / "teacher_samples.json"
            samples = read_json(path)["samples"]
            unknown = [sample["id"] for sample in samples if sample["id"] not in items]
            if unknown:
                raise ValueError(f"{path}: ids {unknown[:3]} are not training prompts of task {task.name!r}")
            budget = read_json(run_dir(results_dir, run) / "config.json")["config"]["max_new_tokens"]
            metrics, _ = score_items([items[sample["id"]] for sample in samples],
                                     [sample["text"] for sample in samples], task.score)
            per_run.append({**{key: 100 * value for key, value in metrics.items() if key != "n"},
                            "ran to the token budget": 100 * sum(len(sample["tokens"]) >= budget for sample in samples)
                            / len(samples)})
        table[label] = {column: seed_mean([values[column] for values in per_run], as_list(runs))
                        for column in per_run[0]}
    return seed_table(table, index_name="samples")


def plot_comparison(table: pd.DataFrame, title: str, path_stem: str | Path, metric: str = "correct"):
    """One bar per row (mean over seeds, its value written above it), whiskers: 95% CI cut at [0, 100], dots: seeds;
    black diamonds: the paper's numbers where it gives them."""
    labels = list(table.index)
    colours = colours_for(labels)
    seeds, single = seeds_note(table, metric)
    means = table[metric].astype(float).values
    x = np.arange(len(labels))
    with style():
        fig, ax = plt.subplots(figsize=(1.5 * len(labels) + 2.5, 3.8))
        ax.bar(x, means, 0.65, color=[colours[label] for label in labels], zorder=2)
        draw_interval(ax, x, means, table[metric + CI].values if metric + CI in table else None, PERCENT)
        draw_seeds(ax, x, per_seed(table, metric), colour="black", spread=0.22)
        errors = clipped_errors(means, table[metric + CI].values if metric + CI in table else None, PERCENT)
        for position, mean, above, seeds_of_row in zip(x, means, errors[1], per_seed(table, metric)):
            top = max(mean + above, *seeds_of_row)
            if top + 2 < 96:
                ax.text(position, top + 2, f"{mean:.1f}", ha="center", va="bottom", fontsize=8.5, color="0.2")
            else:  # no room above: inside the bar
                ax.text(position + 0.3, mean - 2, f"{mean:.1f}", ha="right", va="top", fontsize=8.5, color="white")
        if "paper" in table and table["paper"].notna().any():
            ax.scatter(x, table["paper"], marker="D", s=30, color="black", zorder=5, label="paper (Qwen2.5-7B)")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_xticks(x, [_wrap(method_name(label), 16) for label in labels])
        limit_axis(ax, PERCENT, full=True)
        ax.set_ylabel({"correct": "accuracy (%)", "strict": "strict accuracy (%)",
                       "lenient": "lenient accuracy (%)"}.get(metric, f"{metric} (%)"))
        ax.set_title(f"{title}\n{n_label(seeds, table.attrs.get('items'))}")
        note = f"Bars: mean over seeds (the number above it); {WHISKERS}."
        if single:
            note += _single_note(single)
        fig.tight_layout()
        caption(fig, note)
        save_figure(fig, path_stem)
    return fig


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


# --- Fig. 3: sequential learning ----------------------------------------------------------------------------------

def sequential_table(results_dir: str | Path, methods: list[str], tasks: list[str],
                     seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """Paper Fig. 3: accuracy on every task after each stage of sequential training (mean over seeds, its CI and
    each seed's value), raw and normalised so that 0 is the base model's accuracy on the task and 1 the best mean
    accuracy either method reached on it. Reads eval/<task>_base.json and
    eval/seq_<method>_<stage>_on_<task>[_seed<s>].json. attrs["items"]: test items per task."""
    def accuracy(names: Names) -> SeedMean:
        return over_seeds(results_dir, names, lambda result: 100 * result["test"]["correct"])

    rows, items = [], {}
    for task in tasks:
        base = accuracy(f"{task}_base")
        items[task] = items_of(results_dir, f"{task}_base", "test")
        rows.append(({"method": "base", "stage": 0, "after": "base", "task": task}, base))
        for method in methods:
            for stage, trained in enumerate(tasks, start=1):
                reached = accuracy([seeded(sequential_eval(method, stage, task), seed) for seed in seeds])
                rows.append(({"method": method, "stage": stage, "after": trained, "task": task}, reached))
    all_seeds = sorted({s for _, reached in rows for s in reached.seeds})
    records = []
    for keys, reached in rows:
        values = dict(zip(reached.seeds, reached.values))
        records.append({**keys, "accuracy": reached.mean, "accuracy" + CI: reached.half_width,
                        **({f"accuracy{SEED}{s}": values.get(s, math.nan) for s in all_seeds}
                           if len(all_seeds) > 1 else {})})
    frame = pd.DataFrame(records)
    for task in tasks:
        selected = frame["task"] == task
        base = frame[selected & (frame["method"] == "base")]["accuracy"].iloc[0]
        best = frame[selected]["accuracy"].max()
        frame.loc[selected, "normalized"] = (frame[selected]["accuracy"] - base) / (best - base) if best > base else 0.0
    frame.attrs["items"] = items
    return frame


def plot_sequential(frame: pd.DataFrame, path_stem: str | Path):
    """One panel per task: its normalised accuracy after each stage, per method (mean over seeds; whiskers: 95% CI
    cut where the accuracy would leave [0, 100] %; dots: seeds). Methods are drawn a little apart so that equal values
    stay visible."""
    tasks = list(dict.fromkeys(frame["task"]))
    methods = [m for m in dict.fromkeys(frame["method"]) if m != "base"]
    seed_cols = seed_columns(frame, "accuracy")
    seeds = max([int(frame[seed_cols].notna().sum(axis=1).max())] if seed_cols else [1])
    items = frame.attrs.get("items", {})
    with style():
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.3 * len(tasks), 3.9), sharey=True, squeeze=False)
        for ax, task in zip(axes[0], tasks):
            rows = frame[frame["task"] == task]
            base = float(rows[rows["method"] == "base"]["accuracy"].iloc[0])
            best = float(rows["accuracy"].max())
            scale = (best - base) if best > base else math.nan
            for index, method in enumerate(methods):
                chosen = rows[rows["method"].isin([method, "base"])].sort_values("stage")
                offset = (index - (len(methods) - 1) / 2) * 0.08
                x = chosen["stage"].values + offset
                y = chosen["normalized"].astype(float).values
                colour = method_colour(method)
                ax.plot(x, y, color=colour, marker=method_marker(method), linestyle=method_linestyle(method),
                        label=method_name(method), zorder=3, markersize=5)
                if not math.isnan(scale):
                    bounds = ((0 - base) / scale, (100 - base) / scale)
                    draw_interval(ax, x, y, chosen["accuracy" + CI].values / scale, bounds, colour=colour,
                                  elinewidth=0.9)
                    draw_seeds(ax, x, [[(v - base) / scale for v in values]
                                       for values in per_seed(chosen.set_index("stage"), "accuracy")], colour=colour,
                               s=10, alpha=0.55)
            ax.set_title(f"accuracy on {task.replace('_', ' ')}\n"
                         f"(base model {base:.0f}%, best {best:.0f}%; {n_label(None, items.get(task))})")
            ax.set_xticks(range(len(tasks) + 1), ["base\nmodel"] + [f"after\n{t.replace('_', ' ')}" for t in tasks])
            ax.axhline(0, color="0.6", linewidth=0.7, zorder=1)
            ax.axhline(1, color="0.6", linewidth=0.7, linestyle=":", zorder=1)
        axes[0][0].set_ylabel("normalised accuracy\n(0: base model, 1: best mean reached)")
        axes[0][0].legend(loc="upper left")
        fig.suptitle(f"Fig. 3: learning three skills in sequence ({n_label(seeds)} per stage)")
        fig.tight_layout()
        caption(fig, f"Lines: mean over seeds; {WHISKERS}. SFT and SDFT are drawn slightly apart on the x axis; "
                     f"both start at the base model.")
        save_figure(fig, path_stem)
    return fig


# --- Fig. 4: new task vs prior capabilities -----------------------------------------------------------------------

def pareto_table(results_dir: str | Path, models: dict[str, dict]) -> pd.DataFrame:
    """Paper Fig. 4: one row per trained model: its method, the learning rate its name carries ("…_lr0.0003…"; NaN
    if none), new-task accuracy (eval/<eval>.json, test) and the average of its prior capabilities
    (prior/<prior>.json), each a mean over seeds with its CI and per-seed values. models: label → {"method", "eval",
    "prior"}, where "eval" and "prior" are a name or one name per seed. attrs: "items" (new-task test items),
    "benchmarks" (the prior-capability benchmarks averaged)."""
    rows, items, benchmarks = {}, [], []
    for label, spec in models.items():
        rate = learning_rate_of(label)
        rows[label] = {"method": spec["method"], "learning rate": rate if rate is not None else math.nan,
                       "new task": over_seeds(results_dir, spec["eval"], lambda r: 100 * r["test"]["correct"]),
                       "prior capabilities (avg)": over_seeds(results_dir, spec["prior"], lambda r: 100 * r["average"],
                                                              folder="prior")}
        items += items_of(results_dir, spec["eval"], "test")
        prior = read_json(result_path(results_dir, "prior", as_list(spec["prior"])[0]))
        benchmarks += [b for b in prior.get("benchmarks", []) if b not in benchmarks]
    frame = seed_table(rows)
    frame.attrs.update({"items": items, "benchmarks": benchmarks})
    return frame


BENCHMARK_NAMES = {"humaneval": "HumanEval", "ifeval": "IFEval", "mmlu": "MMLU"}


def plot_pareto(frame: pd.DataFrame, title: str, path_stem: str | Path):
    """Each model at (new-task accuracy, average prior capability): a marker per method at the mean over seeds,
    whiskers for the 95% CIs on both axes cut at [0, 100] %, faint dots for the seeds (each seed's pair), and the
    learning rate beside each point."""
    x, y = "new task", "prior capabilities (avg)"
    seeds, single = seeds_note(frame, x)
    points, labels = {}, []
    with style():
        fig, ax = plt.subplots(figsize=(6.8, 5.0))
        for method in dict.fromkeys(frame["method"]):
            rows = frame[frame["method"] == method]
            colour = method_colour(method)
            xs, ys = rows[x].astype(float).values, rows[y].astype(float).values
            draw_interval(ax, ys, xs, rows[x + CI].values if x + CI in rows else None, PERCENT, horizontal=True,
                          colour=colour, elinewidth=0.8, alpha=0.7)
            draw_interval(ax, xs, ys, rows[y + CI].values if y + CI in rows else None, PERCENT, colour=colour,
                          elinewidth=0.8, alpha=0.7)
            for (label, row), px, py in zip(rows.iterrows(), xs, ys):
                sx, sy = per_seed(frame.loc[[label]], x)[0], per_seed(frame.loc[[label]], y)[0]
                if len(sx) > 1 and len(sx) == len(sy):
                    ax.scatter(sx, sy, s=12, color=colour, alpha=0.35, edgecolors="none", zorder=2)
                points[label] = (px, py)
                rate = row.get("learning rate", math.nan)
                text = (learning_rate_label(rate) if not pd.isna(rate)
                        else "" if label == method else method_name(label))
                if text:
                    labels.append((px, py, text, colour))
            ax.scatter(xs, ys, s=60, color=colour, marker=method_marker(method), edgecolors="white", linewidths=0.8,
                       label=method_name(method), zorder=5)
        ax.set_xlim(-4, 104)
        limit_axis(ax, PERCENT, which="y")
        ax.set_xlabel("new-task accuracy (%)  →  better")
        benchmarks = ", ".join(BENCHMARK_NAMES.get(b, b) for b in frame.attrs.get("benchmarks", []))
        ax.set_ylabel(f"prior capabilities, average (%)  →  better" + (f"\n({benchmarks})" if benchmarks else ""))
        ax.set_title(f"{title}\n{n_label(seeds, frame.attrs.get('items'), 'test items')} per model")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="method")
        fig.tight_layout()
        label_points(ax, labels)
        note = ("Markers: mean over seeds; whiskers: 95% CIs over seeds (Student t) on both axes, cut at [0, 100] %; "
                "faint dots: each seed's (new task, prior) pair; labels: learning rate.")
        if single:
            note += _single_note([frame.loc[s, "method"] for s in single])
        together = coincident(points, tolerance=1.0)
        if together:
            note += " Within a point of one another on both axes (markers overlap): " + "; ".join(
                " and ".join(_point_name(frame, label) for label in group) for group in together) + "."
        caption(fig, note)
        save_figure(fig, path_stem)
    return fig


def _point_name(frame: pd.DataFrame, label: str) -> str:
    rate = frame.loc[label].get("learning rate", math.nan)
    name = method_name(frame.loc[label, "method"])
    return f"{name} ({learning_rate_label(rate)})" if not pd.isna(rate) else name


# --- Fig. 5: pass@k and scale -------------------------------------------------------------------------------------

def pass_at_k_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Fig. 5 (right): pass@k (%) per label (label → passk/<name>.json, or one per seed: the mean over
    seeds, with a column "<k> ± 95% CI" after each k and then "<k> seed<s>"), one column per k. attrs["items"]: the
    number of problems."""
    table, items = {}, []
    for label, names in rows.items():
        ks = sorted(read_json(result_path(results_dir, "passk", as_list(names)[0]))["pass_at_k"], key=int)
        table[label] = {k: over_seeds(results_dir, names, lambda result, k=k: 100 * result["pass_at_k"][k], "passk")
                        for k in ks}
        items += items_of(results_dir, names, "", "passk", "items")
    frame = seed_table(table)
    frame.attrs["items"] = items
    return frame


def plot_pass_at_k(frame: pd.DataFrame, title: str, path_stem: str | Path):
    """pass@k against k per label (mean over seeds; whiskers: 95% CI cut at [0, 100] %; dots: seeds). Labels are
    drawn a little apart along k, the base model dashed with open markers, so that none hides another; labels whose
    curves are equal are named in the caption."""
    ks = [k for k in metric_columns(frame)]
    labels = list(frame.index)
    colours = colours_for(labels)
    seeds, single = seeds_note(frame, ks[0])
    curves = {label: tuple(round(float(frame.loc[label, k]), 9) for k in ks) for label in labels}
    with style():
        fig, ax = plt.subplots(figsize=(6.2, 4.2))
        for index, label in enumerate(labels):
            shift = 2 ** ((index - (len(labels) - 1) / 2) * 0.07)
            x = np.array([int(k) for k in ks], dtype=float) * shift
            means = frame.loc[label, ks].astype(float).values
            base = method_name(label) == "base model"
            ax.plot(x, means, color=colours[label], marker=method_marker(label), linestyle=method_linestyle(label),
                    markerfacecolor="white" if base else colours[label], markersize=6 if base else 5,
                    label=method_name(label), zorder=5 if base else 4)
            draw_interval(ax, x, means, [frame.loc[label].get(k + CI, math.nan) for k in ks], PERCENT,
                          colour=colours[label], elinewidth=0.9)
            draw_seeds(ax, x, [per_seed(frame.loc[[label]], k)[0] for k in ks], colour=colours[label], s=10,
                       alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(k) for k in ks], ks)
        limit_axis(ax, PERCENT, full=True)
        ax.set_xlabel("k (samples per problem)")
        ax.set_ylabel("pass@k (%)")
        ax.set_title(f"{title}\n{n_label(seeds, frame.attrs.get('items'), 'problems')}")
        ax.legend(loc="center right")
        fig.tight_layout()
        note = f"Lines: mean over seeds; {WHISKERS}. Curves drawn slightly apart along k."
        if single:
            note += _single_note(single)
        same = [group for group in _equal_groups(curves) if len(group) > 1]
        for group in same:
            value = curves[group[0]]
            level = f" ({value[0]:.0f}% at every k)" if len(set(value)) == 1 else ""
            names = " and ".join(method_name(g) for g in group)
            note += f" {'The ' if names.startswith('base') else ''}{names} coincide{level}."
        caption(fig, note)
        save_figure(fig, path_stem)
    return fig


def _equal_groups(values: dict[str, tuple]) -> list[list[str]]:
    groups: dict[tuple, list[str]] = {}
    for label, value in values.items():
        groups.setdefault(value, []).append(label)
    return list(groups.values())


def scale_gap_table(results_dir: str | Path, sizes: dict[str, dict[str, Names]]) -> pd.DataFrame:
    """Paper Fig. 5 (left): SDFT − SFT new-task accuracy per model size (size label → {"sft": eval, "sdft": eval},
    each a name or one per seed). The gap is the difference of the means; where both have the same seeds, each
    seed's SDFT − SFT gives the gap's per-seed values and its 95% CI (paired by seed)."""
    rows, items = {}, []
    for size, names in sizes.items():
        sft, sdft = (over_seeds(results_dir, names[m], lambda r: 100 * r["test"]["correct"]) for m in ("sft", "sdft"))
        gap: SeedMean | float = sdft.mean - sft.mean
        if sft.seeds == sdft.seeds and len(sft.seeds) > 1:
            gap = seed_mean([b - a for a, b in zip(sft.values, sdft.values)],
                            [seeded("gap", seed) for seed in sft.seeds])
        rows[size] = {"SFT": sft, "SDFT": sdft, "SDFT − SFT": gap}
        items += items_of(results_dir, names["sft"], "test")
    frame = seed_table(rows, "model size")
    frame.attrs["items"] = items
    return frame


def plot_scale_gap(table: pd.DataFrame, path_stem: str | Path,
                   title: str = "Fig. 5 (left): SDFT − SFT by model size"):
    """SDFT − SFT new-task accuracy (points) per model size: the mean gap, whiskers: 95% CI of the per-seed gaps cut
    at [−100, 100], dots: each seed's gap."""
    gap = "SDFT − SFT"
    seeds, _ = seeds_note(table, gap)
    x = np.arange(len(table))
    means = table[gap].astype(float).values
    with style():
        fig, ax = plt.subplots(figsize=(max(4.8, 1.6 * len(table) + 2.5), 3.8))
        ax.axhline(0, color="0.5", linewidth=0.9, zorder=1)
        draw_interval(ax, x, means, table[gap + CI].values if gap + CI in table else None, (-100.0, 100.0),
                      colour=method_colour("sdft"))
        draw_seeds(ax, x, per_seed(table, gap), colour=method_colour("sdft"), spread=0.12)
        ax.plot(x, means, color=method_colour("sdft"), marker="D", zorder=5)
        for position, mean, (size, row) in zip(x, means, table.iterrows()):
            ax.annotate(f"{mean:+.1f}\n(SFT {row['SFT']:.0f}%, SDFT {row['SDFT']:.0f}%)", (position, mean),
                        xytext=(10, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_xticks(x, table.index)
        ax.set_xlim(-0.6, len(table) - 0.4 + 0.6)
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, -5), max(high, 5))
        limit_axis(ax, (-100.0, 100.0))
        ax.set_ylabel("SDFT − SFT new-task accuracy\n(percentage points)")
        ax.set_title(f"{title}\n{n_label(seeds, table.attrs.get('items'), 'test items')}")
        fig.tight_layout()
        caption(fig, "Diamond: difference of the mean accuracies; whiskers: 95% CI of the per-seed differences "
                     "(seed s's SDFT − seed s's SFT), cut at ±100; dots: one per seed. Above 0: SDFT ahead.")
        save_figure(fig, path_stem)
    return fig


# --- Fig. 2: KL to the base policy --------------------------------------------------------------------------------

def kl_figure(result: dict, path_stem: str | Path):
    """Paper Fig. 2 (right): KL to the base policy of the SFT model and of the demonstration-conditioned teacher
    (bars: the mean over the training prompts; whiskers: its 95% CI over prompts, cut at 0; dots: the prompts)."""
    ours = {"SFT model": result["sft_kl_to_base"], "demonstration-conditioned teacher": result["teacher_kl_to_base"]}
    per_prompt = {"SFT model": [e["sft"] for e in result.get("per_example", [])],
                  "demonstration-conditioned teacher": [e["teacher"] for e in result.get("per_example", [])]}
    intervals = {label: mean_ci(values).half_width if len(values) > 1 else math.nan
                 for label, values in per_prompt.items()}
    table = pd.DataFrame({"ours (nats)": ours, "ours" + CI + " (over prompts)": intervals,
                          "paper, Qwen2.5-7B (nats)": PAPER_FIG2})
    table.index.name = "policy"
    colours = {"SFT model": method_colour("sft"), "demonstration-conditioned teacher": method_colour("sdft")}
    x = np.arange(len(ours))
    means = list(ours.values())
    with style():
        fig, ax = plt.subplots(figsize=(5.6, 4.0))
        ax.bar(x, means, 0.6, color=list(colours.values()), zorder=2)
        draw_interval(ax, x, means, list(intervals.values()), NON_NEGATIVE)
        draw_seeds(ax, x, list(per_prompt.values()), colour="black", spread=0.3, s=10, alpha=0.45)
        for position, mean in zip(x, means):
            ax.text(position + 0.32, mean, f"{mean:.1f}", va="bottom", fontsize=8, color="0.25")
        ax.set_xticks(x, ["SFT model", "demonstration-conditioned\nteacher (SDFT's)"])
        ax.set_ylim(bottom=0)
        ax.set_ylabel("KL(· ‖ base), nats per sequence")
        prompts = result.get("n") or len(per_prompt["SFT model"]) or None
        ax.set_title(f"Fig. 2 (right): distance to the base policy ({result['task']})\n"
                     f"{n_label(None, prompts, 'training prompts')}; one SFT model (seed 0)")
        fig.tight_layout()
        caption(fig, "Bars: mean over prompts of the sequence-level KL on each model's own samples; whiskers: 95% CI "
                     "over prompts, cut at 0; dots: one per prompt. Paper (Qwen2.5-7B, ToolAlpaca): SFT 1.26, "
                     "teacher 0.68 nats.")
        save_figure(fig, path_stem)
    return table, fig


# --- Table 2: answer-only supervision -----------------------------------------------------------------------------

def reasoning_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Table 2: accuracy and the average number of generated tokens, ours beside the paper's."""
    table = {}
    for label, names in rows.items():
        paper = PAPER_TABLE2.get(label, (float("nan"), float("nan")))
        table[label] = {"Acc. (%)": over_seeds(results_dir, names, lambda r: 100 * r["test"]["correct"]),
                        "Avg. # tokens": over_seeds(results_dir, names, lambda r: r["test"]["mean_response_tokens"]),
                        "paper Acc.": paper[0], "paper Avg. # tokens": paper[1]}
    return seed_table(table)
