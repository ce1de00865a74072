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
# `results_dir/<name>` as Markdown and CSV (the table) and PNG and PDF (the figure).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
rows = {"base": "knowledge_base", "sft": "knowledge_sft", "sdft": "knowledge_sdft"}  # label: evaluation name
name = "knowledge_acquisition"

# %%
from experiments.report import knowledge_table, plot_knowledge_table, save_table

table = knowledge_table(results_dir, rows)
save_table(table, f"{results_dir}/{name}")
plot_knowledge_table(table, f"{results_dir}/{name}")
table
