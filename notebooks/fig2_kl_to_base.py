# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Fig. 2 (right): how far from the base policy?
# The paper (§3.2) compares the SFT model and the demonstration-conditioned teacher by their KL divergence to the
# base policy, KL(π ‖ π₀): 1.26 nats for SFT vs 0.68 for the teacher on ToolAlpaca with Qwen2.5-7B-Instruct. Here:
# the embedded model on `task`, sequence-level KL on each model's own samples for the same training prompts.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "extraction"
sft_run = "extraction_sft_lr0.0001"
max_examples = 16
dtype = "float32"  # "bfloat16" on a GPU
device = "cpu"

# %%
from experiments.layout import model_dir
from experiments.report import kl_figure, save_table
from sdft_core.eval.evaluate import kl_to_base_of_sft_and_teacher
from tasks.registry import load_task

result = kl_to_base_of_sft_and_teacher(str(model_dir(results_dir, sft_run)), load_task(task),
                                       f"{results_dir}/fig2_kl_to_base.json", max_examples=max_examples,
                                       dtype=dtype, device=device)
table, figure = kl_figure(result, f"{results_dir}/fig2_kl_to_base")
save_table(table, f"{results_dir}/fig2_kl_to_base")
table
