# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Results report
# Every figure and table of a profile in one file, `results_dir/REPORT.md`: for each, the paper's figure or table it
# reproduces, the figure, its table (means over seeds with 95% CIs, as the step wrote it), the paper's numbers, the
# command and notebook that make it, and where and when it ran. A step that has not run yet is listed as such. The
# pipeline runs this notebook last in every profile but the demo; `python -m experiments.results_report <profile>`
# does the same from the command line (experiments/results_report.py). Below, the report as written (its image links
# are relative to the results folder).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
profile = "tiny"  # the profile whose figures and tables to list (experiments/plans.py)
seeds = [0, 1, 2]  # the seeds the profile ran with

# %%
from IPython.display import Markdown

from experiments.results_report import write_report

report = write_report(profile, results_dir, seeds)
print(f"wrote {results_dir}/{report.name}")
Markdown(report.read_text())
