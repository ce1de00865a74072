# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # pass@k of one model (paper §4.1, Fig. 5 right; B.2)
# `samples` completions per test item at temperature 1.0 and top-p 0.95, the number correct per item, and the
# unbiased pass@k estimate for k = 1, 2, 4, … up to `samples`. Written to `{results_dir}/passk/{name}.json`.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "extraction"
name = "base"
model_dir = "base"
samples = 16
max_items = 16  # 0 means all
dtype = "float32"  # "bfloat16" on a GPU
device = "cpu"

# %%
import pandas as pd

from experiments.layout import result_path
from sdft_core.eval.evaluate import pass_at_k_counts
from tasks.registry import load_task

result = pass_at_k_counts(model_dir, load_task(task), "test", samples, str(result_path(results_dir, "passk", name)),
                          max_items=max_items, dtype=dtype, device=device)
pd.Series({f"pass@{k}": 100 * v for k, v in result["pass_at_k"].items()}, name=name).to_frame()
