# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Train one model on a task
# One run of the training loop: SDFT (Algorithm 1) or any baseline, every method and ablation one parameter away
# (see `sdft_core/config.py` for what each field means). A finished run with the same configuration and data is
# skipped; a killed run resumes from its last checkpoint.

# %% tags=["parameters"]
results_dir = "results/tiny"
task = "knowledge"
run_name = "knowledge_sdft"
preset = ""  # "paper_as_written" or "paper_as_run" sets the SDFT fields below; empty keeps them as given
method = "sdft"  # sdft | sft | dft | cpt | offline_distill | sft_teacher_samples
model = "embedded:smollm2-135m-instruct"
teacher_model = ""  # empty: the teacher starts from the student's weights (re-invocation sets the base model)
learning_rate = 1e-4
epochs = 3.0
batch_size = 8
micro_batch_size = 8
warmup_steps = 2
teacher_context = "demonstration"  # demonstration | context | context_and_demonstration | prompt
teacher_kind = "ema"  # ema | frozen | live
ema_alpha = 0.01
estimator = "analytic"  # analytic | token | rao_blackwell
direction = "reverse"  # reverse | forward | jsd
jsd_beta = 0.5
topk = 0  # 0 means the full vocabulary
mask_first_tokens = 0
temperature = 1.0
max_new_tokens = 0  # 0 means the task's budget
importance_sampling = False
checkpoint_every = 10
seed = 0
max_train_examples = 0  # 0 means all
config_overrides = {}  # any other TrainConfig field (sdft_core/config.py documents each), e.g. {"dtype": "bfloat16"}

# %%
import matplotlib.pyplot as plt
import pandas as pd

from data_prep.tasks import load_task
from sdft_core.config import PRESETS, TrainConfig
from sdft_core.train import train

chosen = load_task(task)
examples = chosen.train[: max_train_examples or None]
fields = dict(
    method=method, model=model, teacher_model=teacher_model or None, learning_rate=learning_rate, epochs=epochs,
    batch_size=batch_size, micro_batch_size=micro_batch_size, warmup_steps=warmup_steps,
    teacher_context=teacher_context, teacher_kind=teacher_kind, ema_alpha=ema_alpha, estimator=estimator,
    direction=direction, jsd_beta=jsd_beta, topk=topk or None, mask_first_tokens=mask_first_tokens,
    temperature=temperature, max_new_tokens=max_new_tokens or chosen.max_new_tokens,
    importance_sampling=importance_sampling, checkpoint_every=checkpoint_every, seed=seed, extra={"task": task})
config = TrainConfig(**{**fields, **(PRESETS[preset] if preset else {}), **config_overrides})
summary = train(config, examples, f"{results_dir}/runs/{run_name}")
summary

# %%
metrics = pd.read_json(f"{results_dir}/runs/{run_name}/metrics.jsonl", lines=True)
curve = "kl_per_token" if "kl_per_token" in metrics else "nll_per_token"
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
metrics.plot(x="step", y=curve, ax=axes[0], legend=False, title=curve)
metrics.plot(x="step", y="grad_norm", ax=axes[1], legend=False, title="grad norm")
fig.tight_layout()
