# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Compare trained models on one metric
# A bar chart and a table for one of the paper's ablations (which one is in `title`): Fig. 6 (on-policy vs
# offline distillation), Fig. 7 (teacher context), Fig. 8 (EMA / frozen / live teacher), Appendix A.1 (KL gradient
# estimators). `rows` maps each label to an evaluation written by the evaluate notebook; where the paper gives a
# number it is shown beside ours (black diamonds: Qwen2.5-7B-Instruct). Fig. 6 also scores the teacher samples the
# offline methods train on (`teacher_sample_rows`), which says how much of the task they could learn from them.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
title = "Fig. 7: teacher context"
figure_name = "fig7_teacher_context"
rows = {"answer": "knowledge_sdft"}  # label: evaluation name
split = "test"
metric = "strict"
paper = {}  # label: the paper's number, where it gives one
teacher_sample_rows = {}  # label: the run(s) whose teacher samples to score (Fig. 6); none: no such table
task = ""  # the task of those runs (tasks.registry.TASKS), with teacher_sample_rows

# %%
from experiments.report import comparison_table, plot_comparison, save_table, teacher_samples_table
from tasks.registry import load_task

table = comparison_table(results_dir, rows, split, (metric,), paper or None)
save_table(table, f"{results_dir}/{figure_name}")
plot_comparison(table, title, f"{results_dir}/{figure_name}", metric)
table

# %%
if teacher_sample_rows:
    samples = teacher_samples_table(results_dir, teacher_sample_rows, load_task(task))
    save_table(samples, f"{results_dir}/{figure_name}_teacher_samples")
    display(samples)
