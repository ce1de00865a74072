# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Train one model on a task
# One run of the training loop: SDFT (Algorithm 1) or any baseline, every method and ablation one field of `config`
# away (see `sdft_core/config.py` for what each field means and its default). A finished run with the same
# configuration and data is skipped; a killed run resumes from its last checkpoint. A run folder that holds another
# run is left as it is, with an error saying what differs, unless `overwrite = True`.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "knowledge"
run_name = "knowledge_sdft"
preset = ""  # a named preset (sdft_core/config.py PRESETS: "small_model", "paper_as_run", "paper_as_written"), under `config`
config = {}  # TrainConfig fields (sdft_core/config.py documents each); those not given keep TrainConfig's defaults
max_train_examples = 0  # 0 means all
processes = 1  # 1 trains in this process; N > 1: `accelerate launch` with N processes (one per GPU; experiments/launch.py)
overwrite = False  # replace another run (other config, data or training code) or a damaged checkpoint in the run folder

# %%
import matplotlib.pyplot as plt
import pandas as pd

from experiments.launch import train_step
from experiments.layout import run_dir
from sdft_core.config import preset_config
from tasks.registry import load_task

chosen = load_task(task)
# The task's generation budget unless `config` sets one; the task's name is recorded with the run.
train_config = preset_config(preset, **{"max_new_tokens": chosen.max_new_tokens, "extra": {"task": task}, **config})
summary = train_step(train_config, chosen, max_train_examples, run_dir(results_dir, run_name), processes,
                     overwrite=overwrite)
summary

# %%
metrics = pd.read_json(run_dir(results_dir, run_name) / "metrics.jsonl", lines=True)
curve = "kl_per_token" if "kl_per_token" in metrics else "nll_per_token"
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
metrics.plot(x="step", y=curve, ax=axes[0], legend=False, title=curve)
metrics.plot(x="step", y="grad_norm", ax=axes[1], legend=False, title="grad norm")
fig.tight_layout()
