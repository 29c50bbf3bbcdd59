"""picollm from Python, for a notebook: the table of all runs, one run with its model, and training.

    import picollm
    runs = picollm.load_runs("analysis_runs")          # a DataFrame: one row per analysed run
    run = picollm.load_run("checkpoints/<run>")         # .config .metrics .train_log .model .tokenizer
    run.generate("To be", max_new_tokens=50, temperature=0)   # the text `picollm generate` prints
    run_dir = picollm.train_run(model="lstm", max_steps=200)   # the train_run every backend calls

Importing this module imports neither torch nor matplotlib: a function that needs torch imports it when
called, so reading the table of runs stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picollm.config import RunConfig
from picollm.core.errors import CheckpointError
from picollm.runs.layout import read_metrics, read_train_log

if TYPE_CHECKING:
    import pandas as pd

    from picollm.data.tokenizers import Tokenizer
    from picollm.models.base import LanguageModel


def load_runs(analysis_dir: str | Path = "analysis_runs") -> pd.DataFrame:
    """The table of all analysed runs (runs.sqlite, else runs.csv, under analysis_dir): one row per run, a
    column per setting and metric, numbers as numbers. `picollm analyze-all` writes it."""
    from picollm.runs.table import DB_NAME, TABLE_NAME, read_table  # pandas: only once a table is asked for

    path = Path(analysis_dir) / TABLE_NAME
    if not path.exists() and not (path.parent / DB_NAME).exists():
        raise CheckpointError(f"{analysis_dir} holds no table of runs; run `picollm analyze-all --out "
                              f"{analysis_dir}` first")
    return read_table(path)


@dataclass
class Run:
    """One trained run, loaded: its settings, curves, model and tokenizer, and decoding from it."""

    run_dir: Path
    config: RunConfig
    model: LanguageModel
    tokenizer: Tokenizer
    checkpoint: str  # "best" or "last"
    step: int  # the training step of the loaded weights
    device: str = "cpu"
    _metrics: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def metrics(self) -> pd.DataFrame:
        """metrics.csv: one row per evaluation (step 0 is the untrained model)."""
        if self._metrics is None:
            self._metrics = read_metrics(self.run_dir)
        return self._metrics

    @property
    def train_log(self) -> pd.DataFrame | None:
        """train_log.csv: the training loss and learning rate every --log_interval steps (None if absent)."""
        return read_train_log(self.run_dir)

    def generate(self, prompt: str = "\n", **decoding: Any) -> str:
        """The prompt and its continuation, decoded as `picollm generate` decodes it (same code path, same text
        for the same run, prompt, settings and seed). decoding: DecodeConfig's fields (max_new_tokens,
        temperature, top_k, top_p, repetition_penalty, beam, length_penalty, stop_at_eos, seed)."""
        from picollm.analyze.generate import (  # torch: only once a run decodes
            DecodeConfig,
            continuation_text,
            encode_prompt,
            generate,
        )

        [g] = generate(self.model, [encode_prompt(self.tokenizer, prompt)], DecodeConfig(**decoding),
                       self.tokenizer.eos_id, 1)
        return self.tokenizer.decode(g.prompt_ids) + continuation_text(self.tokenizer, g)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """A trained run (a directory under checkpoints/) with the weights of its best.pt or last.pt."""
    from picollm.runs.checkpoint import load_run as load  # torch: the model is built here

    if checkpoint not in ("best", "last"):
        raise CheckpointError(f"checkpoint must be 'best' or 'last'; got {checkpoint!r}")
    cfg, tokenizer, model, ckpt = load(run_dir, checkpoint, device=device)
    return Run(Path(run_dir), cfg, model, tokenizer, checkpoint, int(ckpt["step"]), device)


def train_run(config: RunConfig | None = None, **settings: Any) -> Path:
    """Train (or resume, or skip when finished) the run of a RunConfig, or of RunConfig's settings given as
    keywords (over the config's when both are given); return its directory. The same train_run that
    `picollm train`, the batch's workers and Ray tasks call. (Not `picollm.train`: that is the subpackage.)"""
    from picollm.train import loop  # torch: only once something trains

    cfg = config.replace(**settings) if config is not None else RunConfig(**settings)
    return loop.train_run(cfg)
