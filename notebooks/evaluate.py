# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Evaluate one model on a task
# Greedy answers (paper B.2) to the task's evaluation splits, scored by the task's deterministic scorer, and
# forgetting on general prompts unrelated to the task: KL(model ‖ base) on the model's own samples and top-1
# agreement with the base model. The result (with every answer, for paired comparisons) goes to
# `{results_dir}/eval/{name}.json`.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "knowledge"
name = "base"
model_dir = "base"  # "base": the untrained base model
base_model = "embedded:smollm2-135m-instruct"  # the base model (forgetting is measured against it)
splits = ["test"]
oracle_context = False  # ask each question with its source text in front of it (Table 1, Oracle RAG)
max_items = 0  # per split; 0 means all
measure_forgetting = True  # KL to base and agreement on general prompts unrelated to the task
max_general_prompts = 0  # 0 means all
max_new_tokens = 0  # 0 means the task's budget
batch_size = 8
dtype = "float32"  # bfloat16 on GPUs
device = "cpu"

# %%
import pandas as pd

from experiments.layout import result_path
from sdft_core.eval.evaluate import evaluate_model
from tasks.knowledge import load_general_prompts
from tasks.registry import load_task

general = [row["prompt"] for row in load_general_prompts("eval")][: max_general_prompts or None]
if not measure_forgetting:
    general = []
result = evaluate_model(model_dir, load_task(task), splits, general, str(result_path(results_dir, "eval", name)),
                        base_model_name=base_model, max_items=max_items, batch_size=batch_size,
                        oracle_context=oracle_context, max_new_tokens=max_new_tokens or None, dtype=dtype,
                        device=device)
pd.DataFrame({split: result[split] for split in splits}).T

# %%
pd.DataFrame(result["records"][splits[0]])[["prompt", "response", "correct"]].head(10)
