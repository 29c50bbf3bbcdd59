"""A new model family is one module and one registration: a bigram model written here, outside the package,
goes through training, the batch (worker processes), the analysis, the study, the report and the
playground's run list, with no file of picollm touched."""

import json
import sys
import textwrap

import pandas as pd
import pytest

from picollm.analyze.analysis import analyze_all
from picollm.config import RunConfig
from picollm.models import FAMILIES, Family, register_family, unregister_family
from picollm.serve.playground import run_rows
from picollm.study.summarize import summarize
from picollm.sweep.batch import train_batch
from picollm.train.loop import train_run

BIGRAM_MODULE = '''
"""The smallest language model: the next token's logits are a table row of the current token."""
from dataclasses import dataclass

from torch import Tensor, nn

from picollm.models.base import LanguageModel


@dataclass
class BigramConfig:
    vocab_size: int
    dropout: float = 0.0  # named after RunConfig's setting, so --dropout reaches it


class Bigram(LanguageModel):
    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)  # (V, V)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, idx: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """idx (B, T) -> logits (B, T, V); the state is the last token, which the next call does not need."""
        return self.drop(self.table(idx)), idx[:, -1:]

    def embedding_matrix(self) -> Tensor:
        return self.table.weight
'''


@pytest.fixture
def bigram(tmp_path, monkeypatch):
    """Register the family from a module on sys.path, as a user's plug-in would be; unregister it after."""
    (tmp_path / "extending_bigram.py").write_text(textwrap.dedent(BIGRAM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "extending_bigram", raising=False)  # this test's module, not a cached one
    register_family(Family("bigram", "extending_bigram", "Bigram", "BigramConfig", "Bigram"))
    yield "bigram"
    unregister_family("bigram")
    sys.modules.pop("extending_bigram", None)


def tiny(corpus: str, out_dir, **extra) -> dict:
    return {"corpus": corpus, "block_size": 16, "batch_size": 8, "max_steps": 30, "eval_interval": 15,
            "eval_tokens": 1024, "warmup_steps": 2, "lr": 3e-2, "out_dir": str(out_dir), "progress": False,
            **extra}


def test_a_family_registered_outside_the_package_runs_through_every_stage(bigram, corpus, tmp_path):
    ck, ar = tmp_path / "ck", tmp_path / "ar"
    cfg = RunConfig(model=bigram, **tiny(corpus, ck))
    assert cfg.run_name().startswith("bigram-")
    metrics = pd.read_csv(train_run(cfg, quiet=True) / "metrics.csv")
    assert metrics["val_loss"].iloc[-1] < metrics["val_loss"].iloc[0]  # it learned

    space = tmp_path / "space.json"
    base = {k: v for k, v in tiny(corpus, ck).items() if k not in ("out_dir", "progress")}
    space.write_text(json.dumps({"description": "bigram and a built-in family", "base": base, "sampler": "grid",
                                 "configs": [{"model": bigram, "dropout": 0.1}, {"model": bigram, "seed": 2},
                                             {"model": "kgram_mlp", "embed": 8, "hidden": 16}]}))
    report = train_batch(space=str(space), workers=2, out_dir=str(ck), log_dir=str(tmp_path / "logs"),
                         console=False)
    assert report.exit_code == 0

    table = analyze_all(ck, ar, workers=2, max_new_tokens=8)
    assert (table["model"] == bigram).sum() == 3 and (table["status"] == "done").all(), sorted(p.name for p in ck.iterdir())
    summarize(ar)
    plots = {p.name for p in (ar / "plots").iterdir()}
    assert "box_val_loss_by_family.png" in plots and "pareto_val_loss_vs_params.png" in plots
    html = (ar / "index.html").read_text()
    assert all(run in html for run in table["run"])

    listed = {row["run"]: row for row in run_rows(ck)}
    assert sum(row["model"] == bigram for row in listed.values()) == 3


def test_unregistering_forgets_the_family(bigram):
    assert bigram in FAMILIES
    unregister_family(bigram)
    assert bigram not in FAMILIES
    with pytest.raises(Exception, match="unknown model family"):
        RunConfig(model=bigram)
