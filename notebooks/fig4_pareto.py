# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Fig. 4 and Table 5: new-task accuracy vs prior capabilities
# One point per trained model of the sweep (base, SFT, SFT + re-invocation, DFT, SDFT at each learning rate): its
# accuracy on the new task against the average of its prior-capability benchmarks; the top right is best. Below,
# Table 5's per-benchmark breakdown, then each model's paired difference to the base model on the same items (each
# seed its own row; a few dozen items per benchmark, so the unpaired averages alone cannot tell forgetting from
# noise). The paper's Table 5 (Qwen2.5-7B, tool use: new task / average) is printed
# for reference; the tiny profile's new task is a stand-in (see `task`).

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
task = "extraction"
models = {"base": {"method": "base", "eval": "extraction_base", "prior": "base"}}  # label: method, eval, prior
# ("eval" and "prior": a name, or a list with one name per training seed: points are means, with 95% CIs)

# %%
import pandas as pd

from experiments.layout import result_path
from experiments.report import PAPER_TABLE5_TOOL_USE, as_list, pareto_table, plot_pareto, save_table
from sdft_core.eval.prior_capabilities import paired_differences_table, prior_capabilities_table
from sdft_core.io import read_json

points = pareto_table(results_dir, models)
save_table(points, f"{results_dir}/fig4_pareto")
plot_pareto(points, f"Fig. 4: {task} (embedded model)", f"{results_dir}/fig4_pareto")
points

# %%
breakdown = prior_capabilities_table({label: [read_json(result_path(results_dir, "prior", name))
                                              for name in as_list(spec["prior"])] for label, spec in models.items()})
breakdown.insert(0, f"New task: {task}", points["new task"].round(1))
save_table(breakdown, f"{results_dir}/table5_prior_capabilities")
breakdown

# %%
reference = read_json(result_path(results_dir, "prior", as_list(models["base"]["prior"])[0]))  # evaluated once
paired = paired_differences_table(reference, {name: read_json(result_path(results_dir, "prior", name))
                                              for label, spec in models.items() if label != "base"
                                              for name in as_list(spec["prior"])})
save_table(paired, f"{results_dir}/table5_paired_vs_base", digits=3)  # small p-values
paired

# %%
pd.DataFrame(PAPER_TABLE5_TOOL_USE, index=["Tooluse", "Avg."]).T.rename_axis("paper, Qwen2.5-7B")
