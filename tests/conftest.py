import os
from pathlib import Path

# tests read the real corpora from the shared data directory unless the caller points elsewhere
os.environ.setdefault("PICOLLM_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
