# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Pre-flight: will SDFT work for this model and task?
# Run this before training. SDFT distils what the demonstration-conditioned teacher knows into the student on the
# student's own rollouts (paper §3), so it needs (1) a teacher that does better than the student on the training
# prompts: the **teacher ceiling**, greedy accuracy under each teacher context; (2) a demonstration that the teacher
# context makes likely; and (3) rollouts that reach the point where the teacher would state the answer, so the
# per-token reward of Eq. 3 has somewhere to land. `sdft_core/eval/preflight.py` documents each measurement and the
# verdict's rules.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "knowledge"
model_dir = "base"  # "base", or a trained run's model folder (then the measurements describe that model)
base_model = "embedded:smollm2-135m-instruct"
teacher_template = "paper"
max_examples = 40
temperature = 1.0  # the rollout temperature you plan to train with
rollouts_per_prompt = 1
contexts = []  # teacher contexts to compare; empty: every one the task supports
max_new_tokens = 0  # 0: the task's own
name = ""  # output name; default preflight_<task>_<template>
dtype = "float32"
device = "cpu"

# %%
from sdft_core.eval.preflight import run_preflight, save_preflight
from sdft_core.model import model_to_load
from sdft_core.model import load_model, load_tokenizer
from tasks.registry import load_task

model_name = model_to_load(model_dir, base_model)
model, tokenizer = load_model(model_name, dtype, device).eval(), load_tokenizer(model_name)
result = run_preflight(model, tokenizer, load_task(task), template=teacher_template, max_examples=max_examples,
                       rollouts_per_prompt=rollouts_per_prompt, temperature=temperature,
                       max_new_tokens=max_new_tokens or None, contexts=contexts or None)
stem = f"{results_dir}/{name or f'preflight_{task}_{teacher_template}'}"
save_preflight(result, stem, f"Pre-flight: {task}, {model_dir}, template {teacher_template!r}, T={temperature}")
print(result.verdict)
result.table

# %% [markdown]
# The training signal on real student rollouts (at the first step of training): the per-token reward of Eq. 3,
# and how much of the divergence falls on the positions where the teacher would state the answer.

# %%
result.signal
