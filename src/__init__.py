"""Lightning + Hydra experiment template.

Configs find the repository through ``PROJECT_ROOT`` so that ``python src/train.py``
writes to the same ``logs/`` and reads the same ``data/`` from any working directory.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
