# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Knowledge acquisition — report
# The table of paper Table 1 for the embedded model (base / SFT / SDFT; strict, lenient, OOD accuracy in %), with the
# forgetting measures, and a figure. Written to `results_dir` as Markdown, CSV, PNG and PDF.

# %% tags=["parameters"]
results_dir = "results/tiny"
models = ["base", "sft", "sdft"]

# %%
from sdft_core.report import knowledge_table, plot_knowledge_table, save_table

table = knowledge_table(results_dir, models)
save_table(table, f"{results_dir}/knowledge_table")
plot_knowledge_table(table, f"{results_dir}/knowledge_figure")
table
