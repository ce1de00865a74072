# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Knowledge acquisition 2/4 — train SDFT or SFT
# One run of the training loop (Algorithm 1 for `method="sdft"`; next-token loss on the demonstrations for
# `method="sft"`). A finished run with the same configuration and data is skipped; a killed run resumes from its
# last checkpoint.

# %% tags=["parameters"]
results_dir = "results/demo"
run_name = "knowledge_sdft"
method = "sdft"
learning_rate = 1e-4
epochs = 3.0
batch_size = 8
micro_batch_size = 8
max_new_tokens = 48
teacher_context = "context_and_demonstration"
teacher_kind = "ema"
ema_alpha = 0.01
direction = "reverse"
mask_first_tokens = 0
checkpoint_every = 10
seed = 0
max_train_examples = 0  # 0 means all

# %%
import matplotlib.pyplot as plt
import pandas as pd

from data_prep.knowledge import load_articles, load_questions, training_examples
from sdft_core.config import TrainConfig
from sdft_core.train import train

articles = load_articles()
examples = training_examples(load_questions("train", articles=articles), articles)
if max_train_examples:
    examples = examples[:max_train_examples]
config = TrainConfig(
    method=method, learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
    micro_batch_size=micro_batch_size, warmup_steps=2, max_new_tokens=max_new_tokens, teacher_context=teacher_context,
    teacher_kind=teacher_kind, ema_alpha=ema_alpha, direction=direction, mask_first_tokens=mask_first_tokens,
    checkpoint_every=checkpoint_every, seed=seed, extra={"task": "knowledge"})
summary = train(config, examples, f"{results_dir}/runs/{run_name}")
summary

# %%
metrics = pd.read_json(f"{results_dir}/runs/{run_name}/metrics.jsonl", lines=True)
curve = "kl_per_token" if method == "sdft" else "nll_per_token"
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
metrics.plot(x="step", y=curve, ax=axes[0], legend=False, title=curve)
metrics.plot(x="step", y="grad_norm", ax=axes[1], legend=False, title="grad norm")
fig.tight_layout()
