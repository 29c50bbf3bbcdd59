import os
from pathlib import Path

import pytest
import torch

# tests read the real corpora from the shared data directory unless the caller points elsewhere
os.environ.setdefault("PICOLLM_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

# The test models are tiny: a second intra-op thread buys nothing, and when the other core is busy
# (a worker subprocess, a parallel job) OpenMP's spinning threads make each op up to 50x slower.
torch.set_num_threads(1)


def toy_sentences(n: int, seed: int = 0) -> list[str]:
    """n short sentences from a tiny grammar: text with structure a small model learns in a few dozen steps."""
    import random

    rng = random.Random(seed)
    nouns = ["the cat", "a dog", "my bird", "one fish"]
    verbs = ["sat on", "ran to", "looked at", "jumped over"]
    return [f"{rng.choice(nouns)} {rng.choice(verbs)} {rng.choice(nouns)}." for _ in range(n)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """Path of a small local text file (1,500 toy sentences) to train on quickly."""
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text("\n".join(toy_sentences(1500)) + "\n")
    return str(path)
