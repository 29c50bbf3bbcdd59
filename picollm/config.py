"""RunConfig: every setting of a training run, its validation, and its fingerprint.

The fingerprint is the sha256 of the canonical JSON of every setting that changes results, after
resolution ("auto" choices made concrete, settings the model family ignores dropped). The same config
therefore always maps to the same run directory, whatever the key order or which defaults were spelled
out, and two configs that differ only in a setting the family ignores are the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from picollm.core.errors import ConfigError
from picollm.core.settings import add_settings_args, setting, validate_settings
from picollm.data.corpora import corpus_identity, corpus_name, default_tokenizer
from picollm.models import FAMILIES, Family, check_family_config, family_fields, family_recipe


@dataclass(frozen=True)
class RunConfig:
    # --- data -------------------------------------------------------------------------------------
    corpus: str = setting("tinyshakespeare", "corpus name (tinyshakespeare, ptb, wikitext2, tinystories) or a path to a .txt file")
    tokenizer: str = setting("auto", "tokenizer; auto = the corpus's own level", choices=("auto", "char", "word", "bpe"))
    # 256 byte tokens + <|endoftext|>: the smallest byte-level BPE vocabulary
    bpe_vocab_size: int = setting(2048, "vocabulary size of the byte-level BPE tokenizer (bpe only)", bounds="[257, inf)")
    block_size: int = setting(64, "context length: tokens per training sequence (the BPTT length for recurrent models)",
                              bounds="[1, inf)")
    batch_size: int = setting(32, "sequences per optimisation step", bounds="[1, inf)")
    batching: str = setting("auto", "random windows, or contiguous streams with carried state; auto = the family's "
                            "recipe (stream for the lstm, random for the others)",
                            choices=("auto", "random", "stream"))
    # --- model ------------------------------------------------------------------------------------
    model: str = setting("transformer", "model family (kgram_mlp, lstm, xlstm, transformer; xlstm_lib with the xlstm extra)")
    embed: int = setting(64, "token embedding size", bounds="[1, inf)")
    hidden: int = setting(128, "hidden size: MLP width (kgram), cell size (lstm), block width (xlstm)", bounds="[1, inf)")
    layers: int = setting(2, "stacked layers (lstm), blocks (xlstm, transformer)", bounds="[1, inf)")
    heads: int = setting(4, "attention heads (transformer) or memory heads (xlstm)", bounds="[1, inf)")
    k: int = setting(3, "context tokens the K-gram MLP sees", bounds="[1, inf)")
    inner_layers: int = setting(1, "hidden layers of the K-gram MLP", bounds="[1, inf)")
    activation: str = setting("gelu", "activation of the K-gram MLP", choices=("relu", "gelu", "silu"))
    norm: bool = setting(True, "LayerNorm in the K-gram MLP / on the LSTM outputs")
    dropout: float = setting(0.0, "dropout probability", bounds="[0, 1)")
    tie_weights: bool = setting(True, "share the input embedding and the output projection")
    positional: str = setting("rotary", "transformer position encoding (learned: nanoGPT's)", choices=("learned", "rotary"))
    xlstm_ratio: str = setting("1:1", "xLSTM[a:b]: a mLSTM blocks for every b sLSTM blocks")
    qk_norm: bool = setting(True, "transformer: RMS-normalise queries and keys before attention")
    qk_scale: float | None = setting(None, "transformer with --qk_norm: the attention logits' scale, in units of "
                                     "1/sqrt(head size) (default: the family's recipe, 1.5)", bounds="(0, inf)",
                                     kind=float)
    mlp_activation: str = setting("gelu", "transformer MLP activation (relu2 = relu(x)**2)", choices=("gelu", "relu2"))
    zero_init_proj: bool = setting(False, "transformer: zero-initialise the residual output projections (and an "
                                          "untied head)")
    split_qkv: bool | None = setting(None, "transformer with --optimizer muon: orthogonalise the query, key and "
                                     "value maps one by one rather than as one matrix (default: the family's "
                                     "recipe, on)", kind=bool)
    canon: int = setting(4, "transformer: width of the Canon layers, a causal depthwise convolution of each block's "
                            "MLP (and with --canon_at attention+mlp, attention) input over that many positions "
                            "(0 = none)", bounds="[0, inf)")
    canon_at: str = setting("mlp", "transformer with --canon: the Canon layers before the MLP only, or before "
                                   "attention too", choices=("mlp", "attention+mlp"))
    attn_gate: bool = setting(True, "transformer: gated attention, each head's output times a sigmoid gate of the "
                                    "attention's input (Qiu et al. 2025)")
    value_embed: bool = setting(True, "transformer: value embeddings, the token's embedding added to attention's "
                                      "values, times a learned gain per layer and channel (after modded-nanogpt)")
    embed_norm: bool = setting(True, "transformer: RMS-normalise the token embeddings before the first block, times "
                                     "a learned gain per channel (after modded-nanogpt)")
    init_range: float = setting(0.0, "lstm: initialise every parameter uniform(-r, r) (0 = the family's default "
                                     "init)", bounds="[0, inf)")
    weight_drop: float = setting(0.0, "lstm: DropConnect on the hidden-to-hidden weights while training, a new mask "
                                  "every step (AWD-LSTM's weight drop)", bounds="[0, 1)")
    locked_dropout: bool = setting(False, "lstm: --dropout with one mask per sequence held over its time steps "
                                          "(variational dropout, AWD-LSTM's LockedDropout), not one per token")
    io_dropout: float = setting(0.0, "xlstm: dropout on the token embeddings and on the last block's output, where "
                                     "the LSTM's --dropout also acts (the xLSTM's --dropout acts inside its blocks)",
                                bounds="[0, 1)")
    # --- optimisation -----------------------------------------------------------------------------
    optimizer: str = setting("auto", "adamw; muon (hidden matrices on Muon at --muon_lr, the rest on AdamW at "
                             "--lr); sgd (plain SGD, --momentum); auto = the family's recipe (muon for the lstm, "
                             "xlstm and transformer, adamw for the kgram_mlp)", choices=("auto", "adamw", "muon", "sgd"))
    lr: float | None = setting(None, "peak learning rate (AdamW, SGD; with muon, of the AdamW-trained parameters; "
                               "default: the family's recipe, 3e-3 for the transformer, 1e-2 for the xlstm, 1e-3 for the "
                               "others)",
                               bounds="(0, inf)", kind=float)
    muon_lr: float = setting(0.02, "muon: peak learning rate of the hidden matrices", bounds="(0, inf)")
    muon_ns: str = setting("polar3", "muon: the orthogonalisation, polar3 (3 Newton-Schulz steps of a "
                           "Polar-Express schedule) or jordan5 (Keller Jordan's 5 steps, torch.optim.Muon's)",
                           choices=("polar3", "jordan5"))
    momentum: float = setting(0.0, "sgd: momentum (0 = plain SGD)", bounds="[0, 1)")
    min_lr_ratio: float | None = setting(None, "cosine / wsd schedule floor, as a fraction of lr (default: the "
                                         "family's recipe, 0 for the transformer and xlstm, 0.1 for the others)", bounds="[0, 1]",
                                         kind=float)
    weight_decay: float = setting(0.01, "weight decay on matrices and embeddings (AdamW, Muon: decoupled; SGD: L2)",
                                  bounds="[0, inf)")
    beta1: float = setting(0.9, "AdamW beta1", bounds="[0, 1)")
    beta2: float = setting(0.99, "AdamW beta2", bounds="[0, 1)")
    schedule: str = setting("auto", "learning-rate schedule after warmup; wsd = warmup-stable-decay (linear "
                            "decay to the floor over the last --decay_frac of the steps); step = x --lr_decay per "
                            "epoch after --decay_start_epoch; auto = the family's recipe (wsd for the lstm, xlstm "
                            "and transformer, cosine for the kgram_mlp)",
                            choices=("auto", "cosine", "constant", "plateau", "wsd", "step"))
    decay_frac: float | None = setting(None, "wsd: share of the run's steps spent decaying (default: the family's "
                                       "recipe, 0.4 for the lstm, 1 for the transformer and xlstm)", bounds="(0, 1]",
                                       kind=float)
    decay_start_epoch: int = setting(4, "step: epochs trained at the full rate before decaying", bounds="[0, inf)")
    lr_decay: float = setting(0.5, "step: multiply the rate by this every epoch after --decay_start_epoch",
                              bounds="(0, 1]")
    warmup_steps: int = setting(50, "linear warmup steps", bounds="[0, inf)")
    ema: float = setting(0.0, "keep an exponential moving average of the weights with this decay per step (e.g. "
                               "0.999: about the last 1,000 steps) and evaluate, keep (best.pt) and analyse it; "
                               "training is unchanged (0 = off)", bounds="[0, 1)")
    dropout_warmup: float = setting(0.0, "raise every dropout rate (--dropout, --io_dropout) linearly from 0 to its "
                                         "setting over this fraction of the run's steps (curriculum dropout; 0 = off)",
                                    bounds="[0, 1]")
    plateau_factor: float = setting(0.5, "plateau schedule: multiply lr by this when val loss stalls", bounds="(0, 1]")
    plateau_patience: int = setting(2, "plateau schedule: evaluations without improvement before decaying",
                                    bounds="[0, inf)")
    grad_clip: float = setting(1.0, "clip the global gradient norm to this (0 = off)", bounds="[0, inf)")
    max_steps: int = setting(1000, "optimisation steps (ignored when epochs > 0)", bounds="[0, inf)")
    epochs: float = setting(0.0, "train for this many passes over the training split (0 = use max_steps)",
                            bounds="[0, inf)")
    eval_interval: int = setting(100, "evaluate on held-out data every N steps", bounds="[1, inf)")
    eval_tokens: int = setting(32768, "validation tokens per evaluation (0 = the whole split)", bounds="[0, inf)")
    early_stop_patience: int = setting(0, "stop after N evaluations without val-loss improvement (0 = never)",
                                       bounds="[0, inf)")
    # the batch order is seeded with seed * SEED_STRIDE + step, which must stay below 2**63
    seed: int = setting(1337, "random seed for initialisation, batches and dropout", bounds="[0, 4294967295]")
    parent: str = setting("", "run directory whose best weights initialise this run (set by --continue_best)")
    # --- runtime (do not change results, not fingerprinted) ----------------------------------------
    device: str = setting("cpu", "cpu, cuda, cuda:N or mps")
    # not fingerprinted, like the device: where a run trains, not what it learns; bf16's losses stay within the
    # seed spread of fp32's (docs/results.md, "bf16"), and a resumed run keeps the precision it started with
    precision: str = setting("auto", "bf16 autocast or fp32; auto = bf16 on CUDA and on CPUs with bf16 units "
                             "(AVX512-BF16, AMX) for models of 250k parameters or more, fp32 elsewhere",
                             choices=("auto", "fp32", "bf16"))
    compile: bool = setting(False, "torch.compile the model")
    # not fingerprinted either: the compiled loss is the eager one up to rounding, and a resumed run keeps the
    # form it started with (picollm/train/loss.py)
    compile_loss: str = setting("auto", "torch.compile the training loss (the softmax over the vocabulary); auto = "
                                "on a CPU when batch x block x vocabulary reaches 2M, where it trains faster",
                                choices=("auto", "on", "off"))
    out_dir: str = setting("checkpoints", "root directory of run directories")
    threads: int = setting(0, "torch CPU threads (0 = torch default)", bounds="[0, inf)")
    progress: bool = setting(True, "show a tqdm progress bar")
    log_interval: int = setting(10, "write the training loss and learning rate every N steps (train_log.csv)",
                                bounds="[1, inf)")

    def __post_init__(self) -> None:
        # lr=1 and lr=1.0 are the same setting: make float fields floats so they fingerprint alike
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("kind") is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
        self.validate()

    # ------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError (one line, naming the fix) for any impossible setting."""
        validate_settings(self)
        if not self.max_steps and not self.epochs:
            raise ConfigError("nothing to train: set --max_steps > 0 or --epochs > 0")
        if self.dropout_warmup and self.compile:
            # torch.compile guards on the rates, so a rate that moves every step recompiles every step
            raise ConfigError("--dropout_warmup changes the dropout rates every step, which --compile would "
                              "recompile for: drop one of them")
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

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> RunConfig:
        """A run's stored config (config.json, a study's trial): a complete record, so a setting it lacks did
        not exist when it was written, and the run trained at that setting's OMITTED_AT value."""
        return cls.from_dict({**{k: v for k, v in OMITTED_AT.items() if k not in d}, **d})

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def resolved(self) -> RunConfig:
        """Make 'auto' choices and unset rates concrete (the family's recipe) and blank out settings that the
        model family ignores. Cached: the schedule asks for every step's rate."""
        return _resolve(self)

    def _resolve_uncached(self) -> RunConfig:
        changes: dict[str, Any] = {}
        recipe = family_recipe(self.model)
        for name in RECIPE_SETTINGS:  # "auto" or not given: the family's value
            if getattr(self, name) in ("auto", None):
                changes[name] = recipe.get(name)
        optimizer = changes.get("optimizer", self.optimizer)
        schedule = changes.get("schedule", self.schedule)
        if not self.qk_norm:
            changes["qk_scale"] = None  # unnormalised queries and keys learn their own scale
        if optimizer != "muon":
            changes["split_qkv"] = False  # the same function and AdamW steps: the layout runs trained with before
        if not self.canon:
            changes["canon_at"] = None  # no Canon layers to place
        if self.tokenizer == "auto":
            changes["tokenizer"] = default_tokenizer(self.corpus)
        tokenizer = changes.get("tokenizer", self.tokenizer)
        if tokenizer != "bpe":
            changes["bpe_vocab_size"] = None
        used = family_fields(self.model)
        for name in model_fields() - used:
            changes[name] = None
        if schedule != "plateau":
            changes["plateau_factor"] = None
            changes["plateau_patience"] = None
        if schedule in ("constant", "step"):
            changes["min_lr_ratio"] = None
        if schedule != "wsd":
            changes["decay_frac"] = None
        if schedule != "step":
            changes["decay_start_epoch"] = None
            changes["lr_decay"] = None
        if optimizer != "muon":
            changes["muon_lr"] = None
            changes["muon_ns"] = None
        if optimizer != "sgd":
            changes["momentum"] = None
        else:  # SGD has no moment estimates
            changes["beta1"] = None
            changes["beta2"] = None
        if self.epochs > 0:
            changes["max_steps"] = None
        return dataclasses.replace(self, **changes)

    def fingerprint_dict(self) -> dict[str, Any]:
        d = self.resolved().to_dict()
        return {k: v for k, v in d.items()
                if k not in RUNTIME_FIELDS and v is not None and not (k in OMITTED_AT and v == OMITTED_AT[k])}

    def fingerprint(self) -> str:
        """sha256 hex digest of the canonical JSON of every result-changing setting."""
        d = self.fingerprint_dict()
        d["corpus"] = corpus_identity(self.corpus)  # a local file is identified by its content, not its path
        return hashlib.sha256(canonical_json(d).encode()).hexdigest()

    def run_name(self) -> str:
        """<family>-<corpus>-<fingerprint[:8]>: the run directory's name."""
        return f"{self.model}-{corpus_name(self.corpus)}-{self.fingerprint()[:8]}"


_resolve = functools.lru_cache(maxsize=4096)(RunConfig._resolve_uncached)

#: settings that a family's config may name without making them its own: every run trains on windows of
#: block_size tokens, whichever family (the transformer's learned positions also need it)
SHARED_MODEL_FIELDS = frozenset({"block_size"})


def model_fields() -> frozenset[str]:
    """The model settings: those that some registered family's config names (less SHARED_MODEL_FIELDS).
    resolved() blanks, for each family, the model settings its config does not name."""
    return _model_fields(tuple(FAMILIES.values()))


@functools.lru_cache(maxsize=64)
def _model_fields(families: tuple[Family, ...]) -> frozenset[str]:
    return frozenset().union(*(family_fields(family.name) for family in families)) - SHARED_MODEL_FIELDS


def __getattr__(name: str) -> Any:
    if name == "MODEL_FIELDS":  # read off the registry when asked for: the family modules import torch
        return model_fields()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Settings added after run directories already existed, each with the value that trains exactly as the code
#: did before it existed. A setting at that value is left out of the fingerprint, so every run trained
#: before the setting was added keeps its directory name; any other value (whatever the field's default is
#: now) is fingerprinted. Never change a value here; a new setting that applies only under a new option
#: (muon_lr, momentum, decay_frac, ...) is blanked by resolved() otherwise and needs no entry.
OMITTED_AT: dict[str, Any] = {"optimizer": "adamw", "qk_norm": False, "qk_scale": 1.0, "mlp_activation": "gelu",
                              "zero_init_proj": False, "split_qkv": False, "init_range": 0.0,
                              "weight_drop": 0.0, "io_dropout": 0.0, "muon_ns": "jordan5",
                              "locked_dropout": False, "dropout_warmup": 0.0, "ema": 0.0, "canon": 0,
                              "canon_at": "attention+mlp", "attn_gate": False, "value_embed": False,
                              "embed_norm": False}
#: settings whose default ("auto", or None for a number or a switch) is the family's recipe
#: (picollm.models.family_recipe)
RECIPE_SETTINGS = ("optimizer", "schedule", "batching", "lr", "min_lr_ratio", "decay_frac", "qk_scale", "split_qkv")
RUNTIME_FIELDS = frozenset({"device", "precision", "compile", "compile_loss", "out_dir", "threads", "progress",
                            "log_interval"})
#: keys that config.json carries besides the settings themselves
BOOKKEEPING_KEYS = frozenset({"fingerprint", "run_name", "versions", "vocab_size", "num_params", "device_used",
                              "precision_used", "max_steps_resolved", "train_tokens"})


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


# --- flags: every RunConfig field is a flag with its default and help line, so every command accepts the
# same settings without copying them
def add_config_args(parser: argparse.ArgumentParser, exclude: Iterable[str] = (), group_title: str = "run settings") -> None:
    """Add one --flag per RunConfig field (default None, so only what the user typed overrides)."""
    add_settings_args(parser, RunConfig, exclude=tuple(exclude), group_title=group_title, override=True)


def config_overrides(args: argparse.Namespace) -> dict:
    """The RunConfig settings the user set explicitly on the command line."""
    names = {f.name for f in fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    overrides = config_overrides(args)
    return base.replace(**overrides) if base else RunConfig(**overrides)
