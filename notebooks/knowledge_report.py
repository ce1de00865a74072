# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Knowledge acquisition — report
# Paper Table 1 for the embedded model: strict, lenient and out-of-distribution accuracy in % (fact matcher), the
# forgetting measures where they were taken, and the paper's numbers (Qwen2.5-7B-Instruct) beside ours. Written to
# `results_dir/<name>` as Markdown and CSV (the table; with several seeds also each seed's value) and PNG and PDF (the
# figure: means, 95% CIs cut at [0, 100] %, one dot per seed).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
rows = {"base": "knowledge_base", "sft": "knowledge_sft", "sdft": "knowledge_sdft"}  # label: evaluation name
name = "knowledge_acquisition"
title = ""  # the figure's title; default: from `name`

# %%
from experiments.report import knowledge_table, plot_knowledge_table, save_table

table = knowledge_table(results_dir, rows)
save_table(table, f"{results_dir}/{name}")
titles = {"table1_knowledge": "Table 1: knowledge acquisition (embedded model)",
          "knowledge_lora": "Knowledge acquisition: SDFT with LoRA beside full fine-tuning (embedded model)"}
plot_knowledge_table(table, f"{results_dir}/{name}",
                     title or titles.get(name, "Knowledge acquisition (embedded model)"))
table
