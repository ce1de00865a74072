# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Fig. 3: learning three skills one after another
# One model is trained on the tasks in order, SFT and SDFT separately, and every task is evaluated after every
# stage. As in the paper, accuracy is normalised per task: 0 is the base model, 1 the best either method reached
# (means over the training seeds; the table keeps each mean's 95% CI).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
tasks = ["tool_use", "extraction", "knowledge"]
methods = ["sft", "sdft"]
seeds = [0]  # training seeds: each point is the mean over them

# %%
from experiments.report import plot_sequential, save_table, sequential_table

frame = sequential_table(results_dir, methods, tasks, tuple(seeds))
save_table(frame.set_index(["method", "stage", "task"]), f"{results_dir}/fig3_sequential")
plot_sequential(frame, f"{results_dir}/fig3_sequential")
frame.pivot_table(index=["method", "stage", "after"], columns="task", values="accuracy").round(1)
