# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Knowledge acquisition 3/4 — evaluate one model
# Greedy answers (paper B.2) to the test and out-of-distribution questions, scored by the deterministic fact matcher
# (strict: all facts, lenient: some fact and nothing wrong), and forgetting on general prompts unrelated to the task:
# KL(model ‖ base) on the model's own samples and top-1 agreement with the base model.

# %% tags=["parameters"]
results_dir = "results/demo"
name = "base"
model_dir = "base"  # "base": the untrained embedded model
oracle_rag = False  # ask each question with its article in front of it (Table 1, Oracle RAG)
max_questions = 0  # 0 means all
max_general_prompts = 0  # 0 means all
max_new_tokens = 48
batch_size = 8

# %%
from data_prep.knowledge import load_articles, load_general_prompts, load_questions
from sdft_core.evaluate import evaluate_knowledge_model

articles = load_articles()
questions = {split: load_questions(split, articles=articles) for split in ("test", "ood")}
general = [row["prompt"] for row in load_general_prompts("eval")]
if max_questions:
    questions = {split: qs[:max_questions] for split, qs in questions.items()}
if max_general_prompts:
    general = general[:max_general_prompts]
oracle_contexts = {article.id: article.text for article in articles.values()} if oracle_rag else None
result = evaluate_knowledge_model(model_dir, questions, general, f"{results_dir}/eval/{name}.json",
                                  max_new_tokens=max_new_tokens, batch_size=batch_size,
                                  oracle_contexts=oracle_contexts)
{k: v for k, v in result.items() if k != "records"}

# %%
import pandas as pd

pd.DataFrame(result["records"]["test"])[["question", "response", "strict", "lenient"]].head(10)
