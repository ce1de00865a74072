"""The tasks: the registry (load_task), the embedded knowledge and skill tasks with their data files (embedded/), and
the paper's tasks read from data/paper (built by data_prep)."""
