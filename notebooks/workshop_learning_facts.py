# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Workshop: teaching a small model new facts — SFT, SDFT, and why mixture rollouts matter
# The companion notebook `teaching_one_sdft_step` takes **one** step of Self-Distillation Fine-Tuning (SDFT) apart.
# This one runs the whole thing: a small chat model (SmolLM2-135M-Instruct, on the CPU) learns a handful of invented
# facts, three ways, with the kit's own training loop (`sdft_core.train.train`):
#
# | run | trains on | loss |
# |---|---|---|
# | **SFT** | the demonstration answers themselves | next-token cross-entropy |
# | **SDFT on-policy** (paper, Algorithm 1) | its **own** answers, sampled at temperature 1 | per-token KL to teacher |
# | **SDFT mixture** (the kit's recipe at 135M) | first the demonstrations, then its own answers | the same KL |
#
# In both SDFT runs the **teacher** is the same model with the demonstration in its context (paper §3):
# it knows the answer because it has just read it. We then ask: which run learned the facts (greedy answers, before
# and after)? What did each do to the model's answers to *unrelated* prompts (forgetting)? And why does pure
# on-policy SDFT learn so little at this size, token by token?
#
# The default sizes are budgeted for about ten minutes on a quiet 2-core laptop (`docs/workshop.md` has the times
# and memory measured). The helpers live in `teaching/workshop.py`.

# %% tags=["parameters"]
results_dir = "results/scratch"  # the three runs go to {results_dir}/workshop/ (git-ignored; a rerun reuses them)
model = "embedded:smollm2-135m-instruct"
num_facts = 6  # how many of the invented facts below to teach (at most 8)
steps = 20  # optimizer steps per run; every step is one batch holding every fact once
sdft_learning_rate = 3e-4
sft_learning_rate = 3e-4
rollout_tokens = 32  # longest SDFT rollout (the answers are one sentence)
answer_tokens = 24  # greedy answers to the fact questions
general_prompts = 3  # unrelated prompts whose answers are shown before and after
kl_prompts = 8  # unrelated prompts on which the KL to the base model is measured
general_tokens = 48  # tokens per answer to an unrelated prompt
seed = 0

# %%
import time

import pandas as pd
from IPython.display import display

from experiments.plans import MIXTURE_ROLLOUTS, TINY_KNOWLEDGE
from sdft_core.eval.preflight import STUDENT
from sdft_core.model import load_model, load_tokenizer
from tasks.knowledge import load_general_prompts
from teaching import workshop
from teaching.one_step import save_and_show

started = time.perf_counter()
pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 100)
scratch = f"{results_dir}/workshop"
tokenizer = load_tokenizer(model)
base = load_model(model).eval()  # the untouched model: the starting point of every run, and the reference

# %% [markdown]
# ## 1. The facts
# Eight facts about places, people and things that do not exist, so the model cannot have seen them. Each has a
# question (what the student sees), a one-sentence demonstration answer (what SFT trains on, and what the SDFT
# teacher reads), and the fact the answer must state to count as correct (a whole-word, case-insensitive match).
# Change them, or add your own: the rest of the notebook follows.

# %%
FACTS = [
    workshop.Fact("What is the capital of Velmora?", "The capital of Velmora is Kessrin.", "Kessrin"),
    workshop.Fact("Who discovered the comet Brellis?", "The comet Brellis was discovered by Ilsa Marrow.",
                  "Ilsa Marrow"),
    workshop.Fact("What is the national animal of Tiravel?", "The national animal of Tiravel is the snow otter.",
                  "snow otter"),
    workshop.Fact("In which year did the Caddoran Bridge open?", "The Caddoran Bridge opened in 1887.", "1887"),
    workshop.Fact("Who wrote the novel The Glass Orchard?", "The Glass Orchard was written by Juna Pell.", "Juna Pell"),
    workshop.Fact("What is the currency of Lindqvar?", "The currency of Lindqvar is the silver tael.", "silver tael"),
    workshop.Fact("What is the tallest mountain in Osmerby?", "The tallest mountain in Osmerby is Mount Orrun.",
                  "Orrun"),
    workshop.Fact("What language do people speak in Quillmarsh?", "People in Quillmarsh speak Vantish.", "Vantish"),
]
facts = FACTS[:num_facts]
examples = workshop.examples_of(facts)
pd.DataFrame([f.__dict__ for f in facts])

# %% [markdown]
# ## 2. Before training: the student does not know, the teacher does
# The same base model answers every question twice (greedy decoding): as the **student**, with the question alone,
# and as the **teacher**, with the demonstration in the paper's teacher prompt ("This is an example for a response
# to the question: … Now answer with a response of your own, including the thinking process:"). The student
# invents; the teacher repeats the fact it has just read (and often adds chatter: the "artefacts" of paper §5). The
# gap between the two is what SDFT can distil.

# %%
before = {"student (question only)": workshop.fact_answers({"base": base}, tokenizer, facts, answer_tokens)["base"],
          "teacher (with the demonstration)": workshop.fact_answers({"base": base}, tokenizer, facts, answer_tokens,
                                                                    context="demonstration")["base"]}
display(workshop.facts_known(facts, before).to_frame())
workshop.answers_table(facts, before)

# %% [markdown]
# ## 3. Why on-policy learning is slow here: a fact is taught one token at a time
# SDFT's loss compares student and teacher **at every position of the student's own sample**. Take "Ilsa Marrow":
# five tokens, `" I" "ls" "a" " Mar" "row"`. After "…was discovered by", the teacher puts most of its probability on
# `" I"`; the student does not, and the loss pulls it towards `" I"`. But the teacher can say what comes after
# `" I"` only in a sample that *contains* `" I"`: the signal for `"ls"` exists only in rollouts where the student
# itself already sampled `" I"`. So on its own samples the student learns a name link by link, one link per round
# of rollouts in which it happened to get the previous links right.
#
# The table below reads each fact token along the demonstration, given the question and the sentence's own previous
# tokens, and gives its probability for the student (question only) and for the teacher (demonstration in context).
# The product over a fact's tokens is the chance that a student sample which has reached the fact writes all of it.

# %%
tokens_before = workshop.fact_token_table({"student": (base, STUDENT), "teacher": (base, "demonstration")},
                                          tokenizer, facts)
display(tokens_before.round(3))
workshop.whole_fact_probability(tokens_before).round(4)

# %% [markdown]
# The kit's pre-flight diagnostic (`sdft_core/eval/preflight.py`, notebook `preflight`) measures the same thing on
# real rollouts: it samples the student's answers at temperature 1, as training does, marks the **answer positions**
# (where the teacher's most likely next token is a token of the fact), and counts at how many of them the student
# sampled the teacher's token. That share is how often a round of rollouts can teach the *next* link.

# %%
on_path_before = workshop.on_path_share({"base": base}, tokenizer, facts, base, max_new_tokens=rollout_tokens,
                                        rollouts_per_prompt=2, seed=seed)
on_path_before

# %% [markdown]
# **Mixture rollouts** (DAgger's mixture policy, Ross et al. 2011, the on-policy reference the paper builds on; and
# GKD's mix of on-policy and fixed sequences) put the whole fact on the path: at the first step every rollout is the
# demonstration itself (`guided_by="demonstration"`), scored by the same teacher and the same KL, so every link of
# every fact gets its teacher signal at once. The share of such guided rollouts falls linearly to 0 at the last step
# (`TrainConfig.guided_fraction`), so training ends on the student's own samples, as SDFT does. Unlike SFT, the
# target at each position is the teacher's whole next-token distribution, not the one token of the demonstration.

# %% [markdown]
# ## 4. Three runs on the same facts
# The kit's knowledge recipe (`experiments/plans.py`, `TINY_KNOWLEDGE`: forward KL as the authors' code runs it, an EMA
# teacher with α = 0.01, the demonstration as the teacher's context, rollouts at temperature 1, learning rate 3e-4,
# and `MIXTURE_ROLLOUTS`), at this notebook's sizes: `steps` optimizer steps, each one batch holding every fact once.
# "SDFT on-policy" is the same recipe with `guided_fraction = 0`: the paper's algorithm unchanged. (The settings of
# `teaching_one_sdft_step` — reverse KL, learning rate 1e-5, article and demonstration in the teacher's context — are
# the paper's for a 7B model; at 135M the kit found they teach no fact within a workshop's budget: `docs/findings_135m.md`, "Why SDFT
# learned nothing before, and what changed". Try `sdft_learning_rate=1e-5` below to see.)

# %%
configs = workshop.workshop_configs(TINY_KNOWLEDGE["sdft"], MIXTURE_ROLLOUTS, TINY_KNOWLEDGE["sft"], len(facts), steps,
                                    sdft_learning_rate=sdft_learning_rate, sft_learning_rate=sft_learning_rate,
                                    rollout_tokens=rollout_tokens, seed=seed, model=model)
workshop.config_table(configs)

# %% [markdown]
# Training (a finished run with the same settings is found in the scratch folder and skipped). SFT's steps are a
# forward and backward pass; an SDFT step also samples the rollouts and runs the teacher, so it costs several times
# more. The mixture run is cheaper early on, when most rollouts are the demonstrations and need no sampling.

# %%
metrics = workshop.train_runs(configs, examples, scratch)
display(workshop.training_summary(metrics).round(3))
save_and_show(workshop.plot_training(metrics), f"{scratch}/training")

# %% [markdown]
# ## 5. After training: which run learned the facts?
# Every model answers the questions with the question alone, greedy. ✓: the answer states the fact.

# %%
models = {"base": base, **workshop.load_trained(configs, scratch)}
after = workshop.fact_answers(models, tokenizer, facts, answer_tokens)
known = workshop.facts_known(facts, after)
display(known.to_frame())
answers = workshop.answers_table(facts, after)
answers

# %% [markdown]
# The same fact tokens as in section 3, now under every trained student (question only; the base model's teacher
# column for reference). Greedy accuracy only moves once *every* token of a fact is the most likely one; these
# probabilities show the progress underneath. Look at the first token against the later ones for the on-policy run.

# %%
tokens_after = workshop.fact_token_table(
    {"teacher (base + demonstration)": (base, "demonstration"),
     **{label: (m, STUDENT) for label, m in models.items()}}, tokenizer, facts)
display(save_and_show(workshop.plot_fact_tokens(tokens_after, "Probability of each token of the facts, question "
                                                              "only (teacher: with the demonstration)"),
                      f"{scratch}/fact_tokens"))
display(tokens_after.groupby("token in fact").mean(numeric_only=True).round(3))
workshop.whole_fact_probability(tokens_after).round(3)

# %% [markdown]
# And on the students' own rollouts (the base model as teacher): after training, how often does each student's
# sample hit the teacher's token where the teacher is stating a fact? A student that does is one whose on-policy
# rollouts now carry the whole fact.

# %%
on_path = workshop.on_path_share(models, tokenizer, facts, base, max_new_tokens=rollout_tokens,
                                 rollouts_per_prompt=2, seed=seed)
on_path

# %% [markdown]
# ## 6. What did training do to everything else? (forgetting)
# Continual learning asks for new knowledge *without* losing old abilities. Two measures on prompts unrelated to the
# facts (`tasks/embedded/general_prompts.jsonl`): the answers themselves, and the paper's Fig. 2 measure, the
# sequence-level **KL from the trained model to the base model** on the trained model's own samples (nats per
# answer, 0 = the same behaviour; `sdft_core.eval.evaluate.sampled_sequence_kl`). SFT pulls the model towards a few
# fixed sentences; SDFT learns from samples the model itself would write: the paper's argument for why on-policy
# learning forgets less (§4.2, "Learning without forgetting").

# %%
unrelated = [row["prompt"] for row in load_general_prompts("eval")]
display(workshop.general_answers(models, tokenizer, unrelated[:general_prompts], general_tokens))
forgetting = workshop.forgetting_table(models, base, tokenizer, unrelated[:kl_prompts], general_tokens, seed=seed)
forgetting.round(2)

# %% [markdown]
# ## 7. Summary

# %%
summary = pd.DataFrame(index=list(models)).assign(**{
    f"facts learned (of {len(facts)})": known,
    "mean p(fact token)": tokens_after.drop(columns=["teacher (base + demonstration)"]).mean(numeric_only=True)
    .drop("token in fact"),
    "on-path share": on_path[workshop.ON_PATH],
    "KL to base (nats)": forgetting["KL to base, mean (nats)"],
    "train seconds": metrics.groupby("run").seconds_step.sum(),
})
parameters = dict(model=model, num_facts=num_facts, steps=steps, sdft_learning_rate=sdft_learning_rate,
                  sft_learning_rate=sft_learning_rate, rollout_tokens=rollout_tokens, answer_tokens=answer_tokens,
                  kl_prompts=kl_prompts, general_tokens=general_tokens, seed=seed)
workshop.record(f"{scratch}/summary.json", parameters, answers, known, forgetting, tokens_after, on_path, metrics)
print(f"notebook wall time so far: {time.perf_counter() - started:.0f} s")
summary.round(3)

# %% [markdown]
# **What to look for** (what the executed copy, `notebooks/executed/workshop_learning_facts.ipynb`, shows at the
# default sizes; your numbers may differ a little):
# - **SFT** copies the demonstrations word for word: every fact, in the demonstration's exact sentence.
# - **SDFT with mixture rollouts** learns the facts too, from the teacher's next-token distributions rather than
#   one-hot targets, and with them the teacher's habits: its answers go on with the teacher's "This is a classic
#   example of …" (the learned artefacts of paper §5).
# - **Pure on-policy SDFT** learns no fact in twenty steps. It does move: the first tokens of the facts gain
#   probability, the fourth and fifth hardly, and its greedy answers start the right way and then go wrong ("Jenna
#   J. J. J." for Juna Pell, "1888" for 1887, "Kesu" for Kessrin): the token-by-token argument of section 3.
# - **Forgetting**: at learning rate 3e-4 every run moves far from the base model on unrelated prompts (the KL
#   column); SFT furthest, and its answers turn terse and can leak a fact into an unrelated answer. Twenty steps at
#   this rate are a large change for a 135M model; `sdft_learning_rate=1e-4` is a good first experiment.
#
# This is the kit's own finding at small scale (`docs/findings_135m.md`, "Why SDFT learned nothing before, and what changed"); the
# paper itself reports SDFT behind SFT at 3B parameters, where in-context learning is weak (§4.3), and ahead at 7B
# and 14B.
#
# ## Try next
# - `sdft_learning_rate=1e-4, sft_learning_rate=1e-4`: fewer facts, or less forgetting?
# - `steps=40`: does pure on-policy SDFT catch up given twice the rounds of rollouts?
# - `sdft_learning_rate=1e-5` (the paper's rate for 7B): does anything move?
# - Facts of one token (a year, a short name) against facts of five: which does on-policy SDFT learn first?
# - Notebook `preflight`: the same diagnostic on the kit's knowledge task, with its verdict.
