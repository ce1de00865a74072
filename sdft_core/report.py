"""Tables and figures from evaluation results (Markdown + CSV tables, PNG + PDF figures)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch runs have no display
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from sdft_core.io import read_json, write_text

KNOWLEDGE_COLUMNS = {"strict": "Acc. (strict)", "lenient": "Acc. (lenient)", "ood_strict": "OOD Acc. (strict)",
                     "ood_lenient": "OOD Acc. (lenient)", "kl_to_base": "KL to base (nats)",
                     "top1_agreement": "Top-1 agreement with base"}


def knowledge_table(results_dir: str | Path, models: list[str]) -> pd.DataFrame:
    """Paper Table 1 layout: accuracies in %, one row per model, plus the forgetting measures.
    Reads eval/knowledge_<model>.json."""
    rows = {}
    for name in models:
        result = read_json(Path(results_dir) / "eval" / f"knowledge_{name}.json")
        rows[name] = {
            "strict": 100 * result["test"]["strict"], "lenient": 100 * result["test"]["lenient"],
            "ood_strict": 100 * result["ood"]["strict"], "ood_lenient": 100 * result["ood"]["lenient"],
            "kl_to_base": result["forgetting"]["kl_to_base"],
            "top1_agreement": result["forgetting"]["top1_agreement"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index").rename(columns=KNOWLEDGE_COLUMNS)
    table.index.name = "model"
    return table


def save_table(table: pd.DataFrame, path_stem: str | Path, digits: int = 2) -> None:
    write_text(f"{path_stem}.csv", table.to_csv())
    write_text(f"{path_stem}.md", table.round(digits).to_markdown() + "\n")


def save_figure(fig, path_stem: str | Path) -> None:
    Path(path_stem).parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        fig.savefig(f"{path_stem}.{suffix}", bbox_inches="tight", dpi=150)


def plot_knowledge_table(table: pd.DataFrame, path_stem: str | Path):
    accuracy = table[[KNOWLEDGE_COLUMNS[c] for c in ("strict", "lenient", "ood_strict")]]
    long = accuracy.reset_index().melt(id_vars="model", var_name="metric", value_name="accuracy (%)")
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [3, 1.2]})
    sns.barplot(long, x="metric", y="accuracy (%)", hue="model", ax=axes[0])
    axes[0].set_ylim(0, 100)
    axes[0].set_title("Knowledge acquisition (embedded model)")
    sns.barplot(x=table.index, y=table[KNOWLEDGE_COLUMNS["kl_to_base"]], ax=axes[1], hue=table.index, legend=False)
    axes[1].set_title("Forgetting: KL(model ‖ base)")
    fig.tight_layout()
    save_figure(fig, path_stem)
    return fig
