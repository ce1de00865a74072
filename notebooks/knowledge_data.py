# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Knowledge acquisition — the embedded dataset
# Paper §4 (*Knowledge Acquisition*) at the scale of the embedded model: articles about **invented** 2025–2026
# disasters, question/answer pairs about them (train / validation / test), and indirect (out-of-distribution)
# questions. Every file is validated here, before anything trains.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)

# %%
import pandas as pd

from sdft_core.io import write_json
from sdft_core.model import EMBEDDED_MODEL, load_tokenizer
from sdft_core.prompts import chat_prompt, teacher_message
from tasks.knowledge import SPLITS, load_articles, load_general_prompts, load_questions, training_examples

articles = load_articles()
splits = {split: load_questions(split, articles=articles) for split in SPLITS}
general = {split: load_general_prompts(split) for split in ("train", "eval")}
summary = {"articles": len(articles), **{f"{s}_questions": len(q) for s, q in splits.items()},
           **{f"general_{s}_prompts": len(p) for s, p in general.items()}}
write_json(f"{results_dir}/data_summary.json", summary)
pd.Series(summary, name="count").to_frame()

# %% [markdown]
# One training example: the student sees only the question; the teacher (paper A.2, best variant) sees the article,
# the question and the demonstration answer in the paper's template.

# %%
tokenizer = load_tokenizer(EMBEDDED_MODEL)
example = training_examples(splits["train"], articles)[0]
print("STUDENT CONTEXT\n" + chat_prompt(tokenizer, example.prompt))
print("TEACHER CONTEXT\n" + chat_prompt(tokenizer, teacher_message(example, "context_and_demonstration")))

# %%
pd.DataFrame([{"split": s, "question": q.question, "answer": q.answer, "facts": q.facts}
              for s, qs in splits.items() for q in qs[:2]])
