# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Fig. 5 (right): pass@k
# If SDFT only sharpened the distribution (entropy collapse), its gain would shrink as k grows. The paper finds the
# gains over base and SFT persist for k up to 128; here k goes up to the number of samples per item.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "extraction"
rows = {"base": "extraction_base"}  # label: pass@k result name

# %%
from experiments.report import pass_at_k_table, plot_pass_at_k, save_table

table = pass_at_k_table(results_dir, rows)
save_table(table, f"{results_dir}/fig5_pass_at_k")
plot_pass_at_k(table, f"Fig. 5 (right): pass@k on {task}", f"{results_dir}/fig5_pass_at_k")
table
