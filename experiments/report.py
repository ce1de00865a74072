"""Tables and figures from evaluation results (Markdown + CSV tables, PNG + PDF figures).

Wherever a table takes an evaluation name it also takes a list of names, one per training seed: the cell is then
the mean over seeds and a column "<metric> ± 95% CI" beside it holds the Student-t half-width (paper B.2: "3 random
seeds … mean performance"). One name gives the plain number and no CI column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.layout import result_path, run_dir, seeded, sequential_eval
from sdft_core.data import Task
from sdft_core.eval.evaluate import score_items
from sdft_core.eval.stats import MeanCI, mean_ci
from sdft_core.io import read_json, save_figure, write_text

Names = str | list[str]  # one evaluation, or one per seed
CI = " ± 95% CI"

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


def read_eval(results_dir: str | Path, name: str) -> dict:
    return read_json(result_path(results_dir, "eval", name))


def as_list(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def over_seeds(results_dir: str | Path, names: Names, value: Callable[[dict], float], folder: str = "eval") -> MeanCI:
    """Mean and 95% CI of `value(result)` over <folder>/<name>.json of every seed (folder: one of RESULT_KINDS)."""
    return mean_ci([value(read_json(result_path(results_dir, folder, name))) for name in as_list(names)])


def seed_table(rows: dict[str, dict[str, MeanCI | float]], index_name: str = "model") -> pd.DataFrame:
    """A table of means; where any row of a column averages several seeds, its CI column follows it (NaN for a row
    with one seed). Plain floats (e.g. the paper's numbers) pass through."""
    names = list(dict.fromkeys(column for row in rows.values() for column in row))
    columns: dict[str, dict] = {}
    for column in names:
        cells = {label: row[column] for label, row in rows.items() if column in row}
        columns[column] = {label: c.mean if isinstance(c, MeanCI) else c for label, c in cells.items()}
        if any(isinstance(c, MeanCI) and c.n > 1 for c in cells.values()):
            columns[column + CI] = {label: c.half_width for label, c in cells.items() if isinstance(c, MeanCI)}
    frame = pd.DataFrame(columns, index=list(rows))
    frame.index.name = index_name
    return frame


def knowledge_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Table 1 layout: accuracies in %, one row per label (label → evaluation name, or one per seed), the
    forgetting measures where they were measured, and the paper's numbers beside ours."""
    table = {}
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
    return seed_table(table)


def save_table(table: pd.DataFrame, path_stem: str | Path, digits: int = 2) -> None:
    write_text(f"{path_stem}.csv", table.to_csv())
    write_text(f"{path_stem}.md", table.round(digits).to_markdown() + "\n")


def plot_knowledge_table(table: pd.DataFrame, path_stem: str | Path):
    accuracy = table[[KNOWLEDGE_COLUMNS[c] for c in ("strict", "lenient", "ood_strict")]]
    long = accuracy.reset_index().melt(id_vars="model", var_name="metric", value_name="accuracy (%)")
    sns.set_theme(style="whitegrid")
    kl_column = KNOWLEDGE_COLUMNS["kl_to_base"]
    forgetting = table[kl_column].dropna() if kl_column in table else pd.Series(dtype=float)
    fig, axes = plt.subplots(1, 2 if len(forgetting) else 1, figsize=(10, 3.5), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.2] if len(forgetting) else [1]})
    sns.barplot(long, x="metric", y="accuracy (%)", hue="model", ax=axes[0][0])
    axes[0][0].set_ylim(0, 100)
    axes[0][0].set_title("Knowledge acquisition (embedded model)")
    if len(forgetting):
        sns.barplot(x=forgetting.index, y=forgetting.values, ax=axes[0][1], hue=forgetting.index, legend=False)
        axes[0][1].set_title("Forgetting: KL(model ‖ base), nats")
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig


def comparison_table(results_dir: str | Path, rows: dict[str, Names], split: str = "test",
                     metrics: tuple[str, ...] = ("correct",), paper: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per label (label → evaluation name, or one per seed): the split's metrics in %, and the paper's
    number if given."""
    table = {}
    for label, names in rows.items():
        table[label] = {metric: over_seeds(results_dir, names, lambda result, m=metric: 100 * result[split][m])
                        for metric in metrics}
        if paper:
            table[label]["paper"] = paper.get(label, float("nan"))
    return seed_table(table)


def teacher_samples_table(results_dir: str | Path, rows: dict[str, Names], task: Task) -> pd.DataFrame:
    """Fig. 6's diagnostic: the teacher samples an offline method trains on (runs/<run>/teacher_samples.json, one per
    training prompt), scored as answers to those prompts (task.eval_splits["train"]), in %, mean ± 95% CI over the
    runs of a label (one per seed); "ran to the token budget": samples as long as the run's max_new_tokens. SFT on
    teacher samples learns what they hold: where they miss the format, no offline use of the teacher can find it."""
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
        table[label] = {column: mean_ci([values[column] for values in per_run]) for column in per_run[0]}
    return seed_table(table, index_name="samples")


def plot_comparison(table: pd.DataFrame, title: str, path_stem: str | Path, metric: str = "correct"):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(1.6 * len(table) + 2, 3.5))
    sns.barplot(x=table.index, y=table[metric], hue=table.index, legend=False, ax=ax)
    if metric + CI in table:
        ax.errorbar(table.index, table[metric], yerr=table[metric + CI], fmt="none", color="black", capsize=4)
    if "paper" in table and table["paper"].notna().any():
        ax.scatter(table.index, table["paper"], marker="D", color="black", zorder=3, label="paper (Qwen2.5-7B)")
        ax.legend()
    ax.set_ylim(0, 100)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig


def sequential_table(results_dir: str | Path, methods: list[str], tasks: list[str],
                     seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """Paper Fig. 3: accuracy on every task after each stage of sequential training (mean over seeds, and its CI),
    raw and normalised so that 0 is the base model's accuracy on the task and 1 the best mean accuracy either method
    reached on it. Reads eval/<task>_base.json and eval/seq_<method>_<stage>_on_<task>[_seed<s>].json."""
    def accuracy(names: Names) -> MeanCI:
        return over_seeds(results_dir, names, lambda result: 100 * result["test"]["correct"])

    rows = []
    for task in tasks:
        base = accuracy(f"{task}_base")
        rows.append({"method": "base", "stage": 0, "after": "base", "task": task, "accuracy": base.mean,
                     "accuracy" + CI: base.half_width})
        for method in methods:
            for stage, trained in enumerate(tasks, start=1):
                reached = accuracy([seeded(sequential_eval(method, stage, task), seed) for seed in seeds])
                rows.append({"method": method, "stage": stage, "after": trained, "task": task,
                             "accuracy": reached.mean, "accuracy" + CI: reached.half_width})
    frame = pd.DataFrame(rows)
    for task in tasks:
        selected = frame["task"] == task
        base = frame[selected & (frame["method"] == "base")]["accuracy"].iloc[0]
        best = frame[selected]["accuracy"].max()
        frame.loc[selected, "normalized"] = (frame[selected]["accuracy"] - base) / (best - base) if best > base else 0.0
    return frame


def plot_sequential(frame: pd.DataFrame, path_stem: str | Path):
    sns.set_theme(style="whitegrid")
    tasks = list(dict.fromkeys(frame["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in [m for m in dict.fromkeys(frame["method"]) if m != "base"]:
            rows = frame[(frame["task"] == task) & (frame["method"].isin([method, "base"]))].sort_values("stage")
            ax.plot(rows["stage"], rows["normalized"], marker="o", label=method.upper())
        ax.set_title(f"performance on {task}")
        ax.set_xticks(range(len(tasks) + 1), ["base"] + [f"after {t}" for t in tasks], rotation=20)
    axes[0][0].set_ylabel("normalised accuracy")
    axes[0][0].legend()
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig


def pareto_table(results_dir: str | Path, models: dict[str, dict]) -> pd.DataFrame:
    """Paper Fig. 4: one row per trained model: its method, new-task accuracy (eval/<eval>.json, test) and the
    average of its prior capabilities (prior/<prior>.json). models: label → {"method", "eval", "prior"}, where
    "eval" and "prior" are a name or one name per seed."""
    rows = {}
    for label, spec in models.items():
        rows[label] = {"method": spec["method"],
                       "new task": over_seeds(results_dir, spec["eval"], lambda r: 100 * r["test"]["correct"]),
                       "prior capabilities (avg)": over_seeds(results_dir, spec["prior"], lambda r: 100 * r["average"],
                                                              folder="prior")}
    return seed_table(rows)


def plot_pareto(frame: pd.DataFrame, title: str, path_stem: str | Path):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x, y = "new task", "prior capabilities (avg)"
    sns.scatterplot(frame, x=x, y=y, hue="method", style="method", s=90, ax=ax)
    if x + CI in frame or y + CI in frame:
        ax.errorbar(frame[x], frame[y], xerr=frame.get(x + CI), yerr=frame.get(y + CI), fmt="none", color="grey",
                    linewidth=0.8)
    ax.set_xlabel("new-task accuracy (%)")
    ax.set_ylabel("prior capabilities, average (%)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig


def pass_at_k_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Fig. 5 (right): pass@k (%) per label (label → passk/<name>.json, or one per seed: the mean over
    seeds, with a column "<k> ± 95% CI" after each k), one column per k."""
    table = {}
    for label, names in rows.items():
        ks = sorted(read_json(result_path(results_dir, "passk", as_list(names)[0]))["pass_at_k"], key=int)
        table[label] = {k: over_seeds(results_dir, names, lambda result, k=k: 100 * result["pass_at_k"][k], "passk")
                        for k in ks}
    return seed_table(table)


def plot_pass_at_k(frame: pd.DataFrame, title: str, path_stem: str | Path):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [k for k in frame.columns if not k.endswith(CI)]
    for label, row in frame.iterrows():
        intervals = [row.get(k + CI, float("nan")) for k in ks]
        ax.errorbar([int(k) for k in ks], row[ks].values.astype(float), yerr=intervals, marker="o", capsize=3,
                    label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig


def kl_figure(result: dict, path_stem: str | Path):
    """Paper Fig. 2 (right): KL to the base policy of the SFT model and of the demonstration-conditioned teacher."""
    ours = {"SFT model": result["sft_kl_to_base"], "demonstration-conditioned teacher": result["teacher_kl_to_base"]}
    table = pd.DataFrame({"ours (nats)": ours, "paper, Qwen2.5-7B (nats)": PAPER_FIG2})
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.barplot(x=list(ours), y=list(ours.values()), hue=list(ours), legend=False, ax=ax)
    ax.set_ylabel("KL(· ‖ base), nats per sequence")
    ax.set_title(f"Distance to the base policy ({result['task']})")
    fig.tight_layout()
    save_figure(fig, path_stem)
    return table, fig


def reasoning_table(results_dir: str | Path, rows: dict[str, Names]) -> pd.DataFrame:
    """Paper Table 2: accuracy and the average number of generated tokens, ours beside the paper's."""
    table = {}
    for label, names in rows.items():
        paper = PAPER_TABLE2.get(label, (float("nan"), float("nan")))
        table[label] = {"Acc. (%)": over_seeds(results_dir, names, lambda r: 100 * r["test"]["correct"]),
                        "Avg. # tokens": over_seeds(results_dir, names, lambda r: r["test"]["mean_response_tokens"]),
                        "paper Acc.": paper[0], "paper Avg. # tokens": paper[1]}
    return seed_table(table)


def scale_gap_table(results_dir: str | Path, sizes: dict[str, dict[str, Names]]) -> pd.DataFrame:
    """Paper Fig. 5 (left): SDFT − SFT new-task accuracy per model size (size label → {"sft": eval, "sdft": eval},
    each a name or one per seed; the gap is the difference of the means)."""
    rows = {}
    for size, names in sizes.items():
        sft, sdft = (over_seeds(results_dir, names[m], lambda r: 100 * r["test"]["correct"]) for m in ("sft", "sdft"))
        rows[size] = {"SFT": sft, "SDFT": sdft, "SDFT − SFT": sdft.mean - sft.mean}
    return seed_table(rows, "model size")
