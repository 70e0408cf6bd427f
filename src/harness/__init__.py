"""The machinery a forker never needs to open: building and checking a run from its config,
run folders and provenance, checkpoints and their safety, interrupts, sweeps and search,
clusters, loggers. Each module holds one concern and is named for it.

The code in front (``src/train.py``, ``src/models/``, ``src/data/``, the tasks, the
dashboard callbacks) imports from here; nothing here imports the entry points.
"""
