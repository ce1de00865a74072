# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Fig. 5 (left): does SDFT's advantage grow with model size?
# The paper trains Qwen2.5 3B, 7B and 14B on Science Q&A: SDFT trails SFT at 3B and leads by 4 points at 7B and
# 7 at 14B, because the teacher is only as good as the model's in-context learning. `sizes` maps each model size
# to its SFT and SDFT evaluations (each a name, or one per training seed: the gap's 95% CI is then over the
# per-seed differences). On this CPU only the embedded 135M model fits, so the tiny profile has one point.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
sizes = {"135M (embedded)": {"sft": "extraction_sft_lr0.0001", "sdft": "extraction_sdft_lr0.0001"}}

# %%
from experiments.report import plot_scale_gap, save_table, scale_gap_table

table = scale_gap_table(results_dir, sizes)
save_table(table, f"{results_dir}/fig5_scale")
plot_scale_gap(table, f"{results_dir}/fig5_scale")
table
