# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # One SDFT step, up close
# A workshop notebook: **one** training example goes through **one** step of Self-Distillation Fine-Tuning (SDFT,
# paper §3, Algorithm 1) on a small chat model (SmolLM2-135M-Instruct, on the CPU, well under a minute).
#
# The idea in one sentence: the *same* model plays two roles. The **student** sees only the question $x$; the
# **teacher** sees the question *and* privileged information $c$ (a demonstration answer, and here also the source
# article). The student writes an answer, the teacher grades it token by token, and the student is nudged towards
# what the teacher would have said. Training minimises the reverse KL on the student's own samples (paper Eq. 1):
#
# $$\mathcal{L}(\theta) = \mathbb{E}_{y \sim \pi_\theta(\cdot|x)}\left[\log \frac{\pi_\theta(y|x)}{\pi(y|x,c)}\right]$$
#
# Five stages: (1) the two contexts, (2) the student's sample, (3) how the teacher scores each token, (4) the loss and
# one optimizer step, (5) the teacher's slow (EMA) update. Every computation is the library's own code
# (`teaching/one_step.py` strings together the functions the training loop uses).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "knowledge"  # knowledge | tool_use | extraction
example_index = 0  # which training example of the task
teacher_context = "auto"  # auto: article + demonstration when the example has an article, else demonstration
seed = 0  # seeds the student's sample
direction = "reverse"  # reverse (the paper's Eq. 1) | forward (the authors' code) | jsd
learning_rate = 1e-5
ema_alpha = 0.01
max_new_tokens = 48

# %%
import textwrap

import pandas as pd
import torch
from IPython.display import display

from sdft_core.io import write_json
from sdft_core.loss import Divergence
from sdft_core.model import EMBEDDED_MODEL, load_model, load_tokenizer
from sdft_core.teacher import Teacher
from tasks.registry import load_task
from teaching import one_step

pd.set_option("display.width", 140)
pd.set_option("display.max_columns", 20)
tokenizer = load_tokenizer(EMBEDDED_MODEL)
student = load_model(EMBEDDED_MODEL, "float32", "cpu").train()  # θ: the weights we train
teacher = Teacher(student, "ema", ema_alpha)  # φ: starts as an exact copy of θ
divergence = Divergence(direction)
example = load_task(task).train[example_index]

# %% [markdown]
# ## 1. One example, two contexts
# A training example has a question $x$, a demonstration answer, and (for the knowledge task) the article the
# answer comes from. The model has never seen the article: the events are invented.

# %%
wrap = lambda text: textwrap.fill(text, 110, replace_whitespace=False)
print("QUESTION\n" + wrap(example.prompt) + "\n\nDEMONSTRATION\n" + wrap(example.demonstration))
if example.context:
    print("\nARTICLE\n" + wrap(example.context))

# %% [markdown]
# The **student context** is the question alone, in the model's chat template. The **teacher context** wraps the same
# question with the privileged information in the paper's prompt (§3; the article is added in front for knowledge
# acquisition, the paper's best variant, A.2). Both are exactly the text the model reads.

# %%
contexts = one_step.make_contexts(tokenizer, example, teacher_context)
print(f"STUDENT CONTEXT ({len(contexts.student_ids)} tokens)\n{contexts.student_text}\n")
print(f"TEACHER CONTEXT ({len(contexts.teacher_ids)} tokens, {contexts.teacher_context}"
      f"{', privileged text shortened to fit' if contexts.teacher_truncated else ''})\n{contexts.teacher_text}")

# %% [markdown]
# ## 2. The student answers (on-policy)
# SDFT learns from the student's **own** answers, $y \sim \pi_\theta(\cdot|x)$, sampled at temperature 1 — not
# from the demonstration. This is what makes it on-policy. The sample is seeded, so every participant sees the same.

# %%
sample = one_step.sample_from_student(student, tokenizer, contexts, max_new_tokens, seed)
print(f"{len(sample.token_ids)} tokens, {'ended by itself' if sample.stopped else f'cut at {max_new_tokens}'}:\n")
print(wrap(sample.text))

# %% [markdown]
# ## 3. The teacher grades every token
# We now run the model twice over the **same** sampled tokens: once behind the student context, once behind the
# teacher context. At this first step the weights are identical ($\phi = \theta$); only the context differs.
# For each token $y_t$ we get two log-probabilities, and their difference is the paper's **implicit reward** (§3.1,
# Eq. 3):
#
# $$r_t = \log \pi(y_t \mid y_{<t}, x, c) - \log \pi_\theta(y_t \mid y_{<t}, x)$$
#
# $r_t > 0$: knowing the answer makes this token *more* likely — a good token. $r_t < 0$: the informed model would
# not have written it. The rewards add up to the sequence log-ratio, $\sum_t r_t = \log \pi(y|x,c) - \log
# \pi_\theta(y|x)$, which is minus the quantity inside Eq. 1 for this one sample.

# %%
before = one_step.score_sample(student, teacher.model, sample, divergence)
before.table.round(3)

# %% [markdown]
# The same numbers as colours over the text: blue tokens are rewarded, red tokens penalised, white is neutral.

# %%
fig = one_step.plot_token_heatmap(
    sample.pieces, before.table.reward, label="implicit reward r_t = log π(y_t|…, x, c) − log π_θ(y_t|…, x)   (nats)",
    title=f"Per-token reward of the student's sample ({task} example {example_index})")
one_step.save_and_show(fig, f"{results_dir}/reward_heatmap")

# %% [markdown]
# ### The full-vocabulary KL at each position
# The reward only looks at the token that was sampled. The loss the paper uses (the *analytic* estimator, Appendix
# A.1) looks at the **whole next-token distribution** at each position $t$:
#
# $$\mathrm{KL}_t = \sum_{v \in \mathcal{V}} \pi_\theta(v \mid y_{<t}, x) \log
# \frac{\pi_\theta(v \mid y_{<t}, x)}{\pi(v \mid y_{<t}, x, c)}$$
#
# Averaged over what the student could sample, $-r_t$ is exactly $\mathrm{KL}_t$: the sampled reward is a one-token
# estimate, $\mathrm{KL}_t$ the exact value. (With `direction="forward"` the roles of the two distributions swap.)

# %%
fig = one_step.plot_token_heatmap(sample.pieces, before.table.divergence, label=f"{before.divergence_label} (nats)",
                                  title="Where student and teacher disagree most", cmap="Purples", centered=False)
display(one_step.save_and_show(fig, f"{results_dir}/kl_heatmap"))
pd.Series(before.sequence(), name="before the step").to_frame()

# %% [markdown]
# Where the divergence is largest, what did each of them want to write next? Below: the student's and the teacher's
# top-5 next tokens at that position, each with its probability under both.

# %%
largest = int(before.table.divergence.idxmax())
print(f"position {largest}, after: …{''.join(sample.pieces[max(0, largest - 12):largest])!r}; "
      f"sampled {sample.pieces[largest]!r} (r_t = {before.table.reward[largest]:.2f}, "
      f"{before.divergence_label} = {before.table.divergence[largest]:.2f})")
one_step.top_next_tokens(tokenizer, before, largest, k=5).round(3)

# %% [markdown]
# ## 4. The loss and one optimizer step
# The loss of this sample is $\sum_t \mathrm{KL}_t$ (the library's `distillation_loss`, analytic estimator), divided
# by the number of tokens as the training loop does. Its gradient (paper §3) pushes down the student's probability
# of tokens it likes more than the teacher does, and up where the teacher is more confident:
#
# $$\nabla_\theta \mathcal{L} = \mathbb{E}_{y\sim\pi_\theta}\Big[\sum_t \sum_{v\in\mathcal{V}} \pi_\theta(v|y_{<t},x)
# \log\frac{\pi_\theta(v|y_{<t},x)}{\pi(v|y_{<t},x,c)}\,\nabla_\theta \log \pi_\theta(v|y_{<t},x)\Big]$$
#
# The teacher is held fixed (no gradient flows into $\phi$). One AdamW step, gradient norm clipped at 1:

# %%
optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=0.0)
step = one_step.optimizer_step(student, teacher, sample, optimizer, divergence)
pd.Series({"loss Σ_t KL_t": step.loss, "Σ_t KL_t from the table above": before.table.divergence.sum(),
           "tokens": step.tokens, "loss per token (differentiated)": step.loss_per_token,
           "gradient norm (before clipping)": step.grad_norm, "learning rate": step.learning_rate,
           "‖θ₁ − θ₀‖": step.student_distance, "parameters": step.parameters}, name="step", dtype=object).to_frame()

# %% [markdown]
# What changed? Score the **same** sample again with the updated student $\theta_1$ (the teacher is still $\phi_0$).
# The KL should fall; tokens with a positive reward tend to gain probability and tokens with a negative reward to lose
# it (a tendency only: the loss acts on the whole next-token distribution at each position, not on the sampled token
# alone). Below the summary: the student's top-5 at the position of largest divergence, after the step.

# %%
after_step = one_step.score_sample(student, teacher.model, sample, divergence)
display(one_step.sequence_summary({"before (θ₀, φ₀)": before, "after the step (θ₁, φ₀)": after_step}))
one_step.top_next_tokens(tokenizer, after_step, largest, k=5).round(3)

# %%
fig = one_step.plot_step_effect(before, after_step, title=f"One step at learning rate {learning_rate:g}")
display(one_step.save_and_show(fig, f"{results_dir}/step_effect"))
one_step.token_changes(before, after_step).round(3)

# %% [markdown]
# ## 5. The teacher follows slowly (EMA)
# After every optimizer step the teacher's weights take a small step towards the student's (Algorithm 1, line 19):
#
# $$\phi_1 = \phi_0 + \alpha\,(\theta_1 - \phi_0)$$
#
# At the first step $\phi_0 = \theta_0$, so the teacher moves exactly $\alpha$ times as far as the student did:
# $\lVert\phi_1 - \phi_0\rVert = \alpha\,\lVert\theta_1 - \theta_0\rVert$. (Later the teacher moves $\alpha$ times the
# *remaining gap* $\lVert\theta_k - \phi_{k-1}\rVert$.) A slow teacher keeps the targets stable while the student
# changes. Measured in parameter space below: the ratio is α up to float32 rounding. Each weight's update is tiny (at
# most about learning rate × α, much less where Adam's step was small), and some updates fall below the float32
# resolution of the weight they are added to and are rounded away (last row). The teacher does not lose them for good:
# the gap $\theta - \phi$ stays, and the teacher catches up once $\alpha$ times the gap is large enough.

# %%
ema = one_step.ema_update(teacher, student, step.student_distance)
display(ema.table())
after_ema = one_step.score_sample(student, teacher.model, sample, divergence)
scores = {"before (θ₀, φ₀)": before, "after the step (θ₁, φ₀)": after_step, "after the EMA (θ₁, φ₁)": after_ema}
one_step.sequence_summary(scores)

# %% [markdown]
# ## Try next
# - `learning_rate=1e-4`: a ten times larger step — does the KL still fall, and what happens to the student's
#   log-probability of its own sample?
# - `direction="forward"`: the per-token KL as the authors' released code computes it.
# - another `example_index` or `seed`, or `task="tool_use"` (no article: the teacher sees the demonstration only).

# %%
write_json(f"{results_dir}/one_step.json", {
    "parameters": {"task": task, "example_index": example_index, "seed": seed, "direction": direction,
                   "learning_rate": learning_rate, "ema_alpha": ema_alpha, "max_new_tokens": max_new_tokens},
    **one_step.walk_record(contexts, sample, scores, step, ema)})
