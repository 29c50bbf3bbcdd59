import os
from pathlib import Path

import torch

# tests read the real corpora from the shared data directory unless the caller points elsewhere
os.environ.setdefault("PICOLLM_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

# The test models are tiny: a second intra-op thread buys nothing, and when the other core is busy
# (a worker subprocess, a parallel job) OpenMP's spinning threads make each op up to 50x slower.
torch.set_num_threads(1)
