# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # SFT and SDFT on your own data
# Your training file (`prompt`, `demonstration`, optional `context`) and evaluation file (`prompt` and an answer key
# for the scorer): the pre-flight, SFT and SDFT training, evaluation with forgetting, and the base / SFT / SDFT table,
# as `python -m experiments.own_data` runs them. `docs/own_data.md` describes the files, the scorers and the presets.
# The defaults run the small example shipped in `examples/own_data/` (12 invented facts) into a scratch folder that
# git ignores. A rerun skips what is done.

# %% tags=["parameters"]
train_file = "examples/own_data/train.jsonl"
eval_file = "examples/own_data/eval.jsonl"  # "": evaluate on the training prompts
output_dir = "results/scratch/own_data"
scorer = "facts"  # exact, contains, facts, json_fields, or your own function as "pkg.module:function"
model = "embedded:smollm2-135m-instruct"
preset = ""  # "": the preset that suits the model's size (sdft_core/config.py PRESETS, preset_for_size)
config = {}  # TrainConfig fields over the preset, for both runs (sdft_core/config.py documents each)
preflight = True  # the pre-flight diagnostic on the training prompts before training
preflight_examples = 40
max_train_examples = 0  # 0 means all
max_eval_items = 0  # 0 means all
max_general_prompts = 0  # general prompts that measure forgetting; 0 means all
batch_size = 8  # prompts per generation batch (evaluation, pre-flight)
overwrite = False  # retrain into run folders that hold a run of another configuration or data

# %%
import pandas as pd

from experiments.own_data import execute, plan_own_data
from sdft_core.io import read_json

run = plan_own_data(train_file, output_dir, eval_file, scorer=scorer, model=model, preset=preset, config=config,
                    preflight=preflight, preflight_examples=preflight_examples,
                    max_train_examples=max_train_examples, max_eval_items=max_eval_items,
                    max_general_prompts=max_general_prompts, batch_size=batch_size, overwrite=overwrite)
table = execute(run)
table

# %% [markdown]
# Each model's answers to the evaluated prompts, side by side.

# %%
records = {label: read_json(f"{output_dir}/eval/{label}.json")["records"][run.split] for label in table.index}
pd.DataFrame({"prompt": [r["prompt"] for r in records["base"]],
              **{label: [r["response"] for r in rows] for label, rows in records.items()}})
