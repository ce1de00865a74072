# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Pick the best run of a sweep by validation accuracy (paper B.1)
# Every candidate run of a hyperparameter sweep (seed 0) was evaluated on the validation split; the best
# configuration is trained again with the other `seeds`, and every seed is evaluated on the test splits (with the
# forgetting measures) under the sweep's name (`name`, `name_seed1`, …), and its prior capabilities are measured
# when `prior` names a suite. Figures then read `eval/{name}.json` and `prior/{name}.json` like any other model.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "paper_tool_use"
name = "paper_tool_use_sdft"
candidates = []  # run names of the sweep
val_split = "val"
test_splits = ["test"]
seeds = [0, 1, 2]  # the chosen configuration is trained and tested once per seed (candidates ran with seed 0)
prior = {}  # e.g. {"suite": "paper"}; empty: no prior-capability evaluation
base_model = "Qwen/Qwen2.5-7B-Instruct"
max_items = 0  # per test split; 0 means all
max_new_tokens = 0  # 0 means the task's budget
measure_forgetting = True  # KL to base and agreement on general prompts unrelated to the task
dtype = "bfloat16"
device = "cuda"
overwrite = False  # retrain a seed's run folder that holds another run (the pipeline does); False: refuse it

# %%
import pandas as pd

from experiments.selection import select_best
from tasks.knowledge import load_general_prompts
from tasks.registry import load_task

general = [row["prompt"] for row in load_general_prompts("eval")] if measure_forgetting else []
choice = select_best(results_dir, load_task(task), name, candidates, val_split, test_splits, general,
                     prior or None, base_model_name=base_model, seeds=tuple(seeds), max_items=max_items,
                     max_new_tokens=max_new_tokens or None, dtype=dtype, device=device, overwrite=overwrite)
pd.Series(choice["val_scores"], name=f"{val_split} accuracy").sort_values(ascending=False).to_frame()
