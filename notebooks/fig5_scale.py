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
# to its SFT and SDFT evaluations. On this CPU only the embedded 135M model fits, so the tiny profile has one point.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
sizes = {"135M (embedded)": {"sft": "extraction_sft_lr0.0001", "sdft": "extraction_sdft_lr0.0001"}}

# %%
import matplotlib.pyplot as plt

from experiments.report import save_table, scale_gap_table
from sdft_core.io import save_figure

table = scale_gap_table(results_dir, sizes)
save_table(table, f"{results_dir}/fig5_scale")
figure, axis = plt.subplots(figsize=(4.5, 3.2))
axis.plot(range(len(table)), table["SDFT − SFT"], marker="o")
axis.axhline(0, color="grey", linewidth=0.8)
axis.set_xticks(range(len(table)), table.index)
axis.set_ylabel("SDFT − SFT accuracy (points)")
save_figure(figure, f"{results_dir}/fig5_scale")
table
