"""The experiments: what each profile runs (plans), the notebook pipeline, model selection, the recipe search,
reports, the results layout, and the command line that trains one run (train_run)."""
