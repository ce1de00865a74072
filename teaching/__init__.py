"""Helpers of the teaching notebooks (they draw figures and import matplotlib and IPython, which the method does not):
`one_step` takes one SDFT step apart (`notebooks/teaching_one_sdft_step`), `workshop` runs SFT and SDFT on a handful
of invented facts (`notebooks/workshop_learning_facts`)."""
