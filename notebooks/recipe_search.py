# ---
# jupyter:
#   kernelspec:
#     display_name: SDFT kit
#     language: python
#     name: sdft-kit
# ---

# %% [markdown]
# # Finding an SDFT recipe for the embedded model (knowledge acquisition)
# Successive halving over SDFT settings, **chosen on the validation split only** (the test and OOD questions are
# never read here): every candidate trains on the questions of a few articles and is scored on their validation
# questions; the best go on to the full training set and the whole validation split. `experiments/recipe_search.py`
# lists the candidates and why each is there; `make reproduce` runs this notebook, and
# `python -m experiments.recipe_search` runs the same search from the command line.

# %% tags=["parameters"]
results_dir = "results/scratch"  # git-ignored; the pipeline passes its profile's folder (e.g. results/tiny)
candidates = []  # names in experiments.recipe_search.CANDIDATES; empty: all
rungs = []  # [[articles, keep], ...]; empty: recipe_search.RUNGS
controls = True  # train the SFT control at every rung and the budget probe at rung 1 (reference points)
base_overrides = {}  # TrainConfig fields changed for every candidate (the test suite's sizes)

# %%
from pathlib import Path

from experiments import recipe_search

chosen = {name: recipe_search.CANDIDATES[name] for name in candidates or recipe_search.CANDIDATES}
table = recipe_search.search(Path(results_dir) / "recipe_search", chosen,
                             tuple(recipe_search.Rung(*r) for r in rungs) or recipe_search.RUNGS,
                             recipe_search.CONTROLS if controls else {}, base_overrides=base_overrides,
                             probes=recipe_search.BUDGET_PROBES if controls else {})
table
