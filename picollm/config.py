"""RunConfig: every setting of a training run, its validation, and its fingerprint.

The fingerprint is the sha256 of the canonical JSON of every setting that changes results, after
resolution ("auto" choices made concrete, settings the model family ignores dropped). The same config
therefore always maps to the same run directory, whatever the key order or which defaults were spelled
out, and two configs that differ only in a setting the family ignores are the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from picollm.errors import ConfigError


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class RunConfig:
    # --- data -------------------------------------------------------------------------------------
    corpus: str = _f("tinyshakespeare", "corpus name (tinyshakespeare, ptb, wikitext2, tinystories) or a path to a .txt file")
    tokenizer: str = _f("auto", "tokenizer; auto = the corpus's own level", ("auto", "char", "word", "bpe"))
    bpe_vocab_size: int = _f(2048, "vocabulary size of the byte-level BPE tokenizer (bpe only)")
    block_size: int = _f(64, "context length: tokens per training sequence (the BPTT length for recurrent models)")
    batch_size: int = _f(32, "sequences per optimisation step")
    batching: str = _f("auto", "random windows, or contiguous streams with carried state; auto = stream for recurrent families",
                       ("auto", "random", "stream"))
    # --- model ------------------------------------------------------------------------------------
    model: str = _f("transformer", "model family (kgram_mlp, lstm, xlstm, transformer; xlstm_lib with the xlstm extra)")
    embed: int = _f(64, "token embedding size")
    hidden: int = _f(128, "hidden size: MLP width (kgram), cell size (lstm), block width (xlstm)")
    layers: int = _f(2, "stacked layers (lstm), blocks (xlstm, transformer)")
    heads: int = _f(4, "attention heads (transformer) or memory heads (xlstm)")
    k: int = _f(3, "context tokens the K-gram MLP sees")
    inner_layers: int = _f(1, "hidden layers of the K-gram MLP")
    activation: str = _f("gelu", "activation of the K-gram MLP", ("relu", "gelu", "silu"))
    norm: bool = _f(True, "LayerNorm in the K-gram MLP / on the LSTM outputs")
    dropout: float = _f(0.0, "dropout probability")
    tie_weights: bool = _f(True, "share the input embedding and the output projection")
    positional: str = _f("learned", "transformer position encoding", ("learned", "rotary"))
    xlstm_ratio: str = _f("1:1", "xLSTM[a:b]: a mLSTM blocks for every b sLSTM blocks")
    # --- optimisation -----------------------------------------------------------------------------
    lr: float = _f(1e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.1, "cosine schedule floor, as a fraction of lr")
    weight_decay: float = _f(0.01, "AdamW weight decay on matrices (0 = Adam)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.99, "AdamW beta2")
    schedule: str = _f("cosine", "learning-rate schedule after warmup", ("cosine", "constant", "plateau"))
    warmup_steps: int = _f(50, "linear warmup steps")
    plateau_factor: float = _f(0.5, "plateau schedule: multiply lr by this when val loss stalls")
    plateau_patience: int = _f(2, "plateau schedule: evaluations without improvement before decaying")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 = off)")
    max_steps: int = _f(1000, "optimisation steps (ignored when epochs > 0)")
    epochs: float = _f(0.0, "train for this many passes over the training split (0 = use max_steps)")
    eval_interval: int = _f(100, "evaluate on held-out data every N steps")
    eval_tokens: int = _f(32768, "validation tokens per evaluation (0 = the whole split)")
    early_stop_patience: int = _f(0, "stop after N evaluations without val-loss improvement (0 = never)")
    seed: int = _f(1337, "random seed for initialisation, batches and dropout")
    parent: str = _f("", "run directory whose best weights initialise this run (set by --continue_best)")
    # --- runtime (do not change results, not fingerprinted) ----------------------------------------
    device: str = _f("cpu", "cpu, cuda, cuda:N or mps (bf16 autocast on cuda)")
    compile: bool = _f(False, "torch.compile the model")
    out_dir: str = _f("checkpoints", "root directory of run directories")
    threads: int = _f(0, "torch CPU threads (0 = torch default)")
    progress: bool = _f(True, "show a tqdm progress bar")

    def __post_init__(self) -> None:
        # lr=1 and lr=1.0 are the same setting: make float fields floats so they fingerprint alike
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, float) and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        self.validate()

    # ------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError (one line, naming the fix) for any impossible setting."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"--{f.name} must be one of {', '.join(choices)}; got {value!r}")
        positive = ["block_size", "batch_size", "embed", "hidden", "layers", "heads", "inner_layers",
                    "bpe_vocab_size", "eval_interval"]
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"--{name} must be a positive integer; got {value!r}")
        if self.k is not None and (not isinstance(self.k, int) or self.k < 1):
            raise ConfigError(f"--k must be an integer >= 1 (the K-gram context); got {self.k!r}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0; got {self.lr}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1); got {self.dropout}")
        for name in ["max_steps", "warmup_steps", "eval_tokens", "early_stop_patience", "threads", "plateau_patience"]:
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0; got {getattr(self, name)}")
        if not self.max_steps and self.epochs <= 0:
            raise ConfigError("nothing to train: set --max_steps > 0 or --epochs > 0")
        if self.epochs < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("--epochs, --grad_clip and --weight_decay must be >= 0")
        if (self.min_lr_ratio is not None and not 0.0 <= self.min_lr_ratio <= 1.0) or (
            self.plateau_factor is not None and not 0.0 < self.plateau_factor <= 1.0
        ):
            raise ConfigError("--min_lr_ratio must be in [0, 1] and --plateau_factor in (0, 1]")
        from picollm.models import check_family_config  # models import torch; keep config light to import

        check_family_config(self)

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a dict, rejecting unknown keys with a one-line error (extra bookkeeping keys allowed)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - BOOKKEEPING_KEYS)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def resolved(self) -> RunConfig:
        """Make 'auto' choices concrete and blank out settings that the model family ignores."""
        from picollm.data import default_tokenizer
        from picollm.models import family_fields

        changes: dict[str, Any] = {}
        if self.tokenizer == "auto":
            changes["tokenizer"] = default_tokenizer(self.corpus)
        tokenizer = changes.get("tokenizer", self.tokenizer)
        if tokenizer != "bpe":
            changes["bpe_vocab_size"] = None
        if self.batching == "auto":
            changes["batching"] = "stream" if self.model in RECURRENT_FAMILIES else "random"
        used = family_fields(self.model)
        for name in MODEL_FIELDS - used:
            changes[name] = None
        if self.schedule != "plateau":
            changes["plateau_factor"] = None
            changes["plateau_patience"] = None
        if self.schedule == "constant":
            changes["min_lr_ratio"] = None
        if self.epochs > 0:
            changes["max_steps"] = None
        return dataclasses.replace(self, **changes)

    def fingerprint_dict(self) -> dict[str, Any]:
        d = self.resolved().to_dict()
        return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS and v is not None}

    def fingerprint(self) -> str:
        """sha256 hex digest of the canonical JSON of every result-changing setting."""
        from picollm.data import corpus_identity

        d = self.fingerprint_dict()
        d["corpus"] = corpus_identity(self.corpus)  # a local file is identified by its content, not its path
        return hashlib.sha256(canonical_json(d).encode()).hexdigest()

    def run_name(self) -> str:
        """<family>-<corpus>-<fingerprint[:8]>: the run directory's name."""
        from picollm.data import corpus_name

        return f"{self.model}-{corpus_name(self.corpus)}-{self.fingerprint()[:8]}"


MODEL_FIELDS = frozenset({"embed", "hidden", "layers", "heads", "k", "inner_layers", "activation", "norm",
                          "dropout", "tie_weights", "positional", "xlstm_ratio"})
RUNTIME_FIELDS = frozenset({"device", "compile", "out_dir", "threads", "progress"})
RECURRENT_FAMILIES = frozenset({"lstm", "xlstm"})
#: keys that config.json carries besides the settings themselves
BOOKKEEPING_KEYS = frozenset({"fingerprint", "run_name", "versions", "vocab_size", "num_params", "device_used",
                              "max_steps_resolved", "train_tokens"})


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_fields() -> list[dataclasses.Field]:
    return list(fields(RunConfig))
