# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Table 2: learning from answer-only data
# The paper fine-tunes a reasoning model (Olmo-3-7B-Think) on medical questions with final answers only: SFT
# shortens its responses and loses accuracy, SDFT keeps the model's own style and gains. Here the embedded model
# stands in: knowledge questions whose demonstrations are cut to the bare facts ("Kessrin; March 2025."). We report
# accuracy (strict, fact matcher) and the average number of generated tokens, the paper's numbers beside ours.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
rows = {"base": "knowledge_base", "sft": "answer_only_sft", "sdft": "answer_only_sdft"}

# %%
from experiments.report import reasoning_table, save_table

table = reasoning_table(results_dir, rows)
save_table(table, f"{results_dir}/table2_answer_only")
table
