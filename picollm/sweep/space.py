"""Search spaces (named presets and user files) and the samplers that turn them into RunConfigs.

A space is a dict (a preset below, or a YAML / JSON file passed to ``batch_train.py --space``):

    description: "xLSTM on PTB: the 27-point grid"      # optional, shown by --dry_run
    base:                                                # RunConfig fields shared by every config
      {corpus: ptb, model: xlstm, block_size: 30, epochs: 5}
    configs:                                             # optional: explicit points, each merged over base
      - {}                                               #   (e.g. a reference config and its neighbours)
      - {hidden: 256}
    choices:                                             # optional: field -> values, crossed with configs
      {embed: [64, 128, 256], hidden: [128, 256, 512], lr: [0.001, 0.005, 0.01]}
    family_base:                                         # optional: fields fixed only when model == family,
      xlstm: {batching: stream}                          #   over base (no draw, so a random space's draws stay)
    family_choices:                                      # optional: extra axes used only when model == family;
      kgram_mlp: {k: [1, 2, 3]}                          #   a field here replaces the shared list for that family
    sampler: grid                                        # grid | random | halving (default grid)
    n_runs: 20                                           # configs to draw (random, halving)
    eta: 3                                               # halving: keep the best 1/eta at every rung
    continue_best: 50                                    # epochs for the best run afterwards (0 = off)

A config is base | family base | configs entry | one value per choice | one value per family choice (later
wins; a field may not be in both `configs` and `choices`). Every key must be a RunConfig field; values are checked
against the field's type (YAML's ``1e-3`` string is read as a float). Samplers:

- grid: every combination, in order (``n_runs`` keeps the first n);
- random: seeded draws (family first, then one value per axis), never two configs with the same
  fingerprint; combinations a family rejects (embed not divisible by heads, ...) are drawn again;
- halving: successive halving over a random sample (the rungs are run by picollm.sweep.batch).

Configs that repeat a fingerprint (they differ only in settings their family ignores) are kept once, and
combinations that RunConfig rejects are skipped; a space with no valid config at all is a one-line error.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.core.settings import check_value
from picollm.models import FAMILIES

log = get_logger()

#: Optuna's model-based samplers, run by picollm.sweep.tuning (ask-and-tell) rather than drawn up front here
OPTUNA_SAMPLERS = ("tpe", "gp", "cmaes", "nsga2")
SAMPLERS = ("grid", "random", "halving") + OPTUNA_SAMPLERS
SPACE_KEYS = ("description", "base", "configs", "choices", "family_base", "family_choices", "sampler", "n_runs", "eta",
              "continue_best")
#: set on the command line, not in a space (a space names what to train, not where to put it)
NOT_IN_SPACES = frozenset({"out_dir"})
_FIELDS = {f.name: f for f in fields(RunConfig)}
_FIELD_TYPES = {f.name: f.metadata.get("kind") or type(f.default) for f in fields(RunConfig)}
_DEFAULT_MODEL = next(f.default for f in fields(RunConfig) if f.name == "model")

# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------
#: picollm's recipe at the size of Zaremba et al.'s small PTB model: the base of ptb-small-picollm, and the LSTM
#: that ptb-xlstm-vs-lstm compares the xLSTM with (one run serves both)
PTB_SMALL_PICOLLM: dict[str, Any] = {
    "corpus": "ptb", "model": "lstm", "layers": 2, "embed": 200, "hidden": 430, "tie_weights": True, "dropout": 0.3,
    "batch_size": 32, "block_size": 35, "optimizer": "adamw", "lr": 2e-3, "schedule": "wsd", "epochs": 8,
    "eval_interval": 830, "eval_tokens": 0,
    # the LSTM's recipe of then, which the xLSTM of ptb-xlstm-vs-lstm shares, whatever the xLSTM's own becomes
    "min_lr_ratio": 0.1, "decay_frac": 0.4, "batching": "stream"}

PRESETS: dict[str, dict[str, Any]] = {
    "pico": {
        "description": "the course study: all four families on Tiny Shakespeare, random over shared and family "
                       "settings, 2,000 steps each (`--dry_run --estimate 10`: about 1.5 h on 2 CPU cores, 2 workers)",
        # Sized for a laptop afternoon: `--dry_run --estimate 10` timed the first version (embed and recurrent
        # hidden up to 256) at 4 h 39 min with 2 workers, three 256-wide xLSTM runs at 1.5 to 2 h each.
        # the transformer and xLSTM recipes the published study ran with (docs/pico_study.md), pinned so that the same
        # command finds its runs: the family's defaults have moved since ("Time to quality" in the README)
        "base": {"corpus": "tinyshakespeare", "max_steps": 2000, "eval_interval": 200, "min_lr_ratio": 0.1,
                 "decay_frac": 0.4, "qk_scale": 1.0, "split_qkv": False},
        "family_base": {"xlstm": {"optimizer": "adamw", "schedule": "cosine", "batching": "stream"}},
        "choices": {"model": ["kgram_mlp", "lstm", "xlstm", "transformer"], "embed": [32, 64, 128],
                    "lr": [1e-3, 3e-3, 1e-2], "block_size": [32, 64, 128], "batch_size": [16, 32, 64]},
        "family_choices": {
            "kgram_mlp": {"k": [1, 2, 3, 4, 5], "inner_layers": [1, 2, 3, 4], "activation": ["relu", "gelu"]},
            "lstm": {"hidden": [64, 128]},
            "xlstm": {"hidden": [64, 128]},
            "transformer": {"layers": [1, 2, 4], "heads": [2, 4, 8]},
        },
        "sampler": "random",
        "n_runs": 40,
    },
    "xlstm-ptb-grid": {
        "description": "xLSTM on PTB (word level, BPTT 30): 27-point grid, 5 epochs each, best continued 50 epochs",
        # the xLSTM's recipe when the preset was written: its defaults have moved since ("Time to quality")
        "base": {"corpus": "ptb", "model": "xlstm", "block_size": 30, "epochs": 5, "eval_interval": 250,
                 "optimizer": "adamw", "schedule": "cosine", "min_lr_ratio": 0.1, "batching": "stream"},
        "choices": {"embed": [64, 128, 256], "hidden": [128, 256, 512], "lr": [0.001, 0.005, 0.01]},
        "sampler": "grid",
        "continue_best": 50,
    },
    "lstm-wikitext2": {
        "description": "2-layer LSTM on WikiText-2 (embed/hidden 100, dropout 0.5, tied, BPTT 30, Adam 1e-3, clip 0.25) "
                       "and its neighbours",
        # the recipe it names, whatever the LSTM's default optimizer becomes
        "base": {"corpus": "wikitext2", "model": "lstm", "layers": 2, "embed": 100, "hidden": 100, "dropout": 0.5,
                 "optimizer": "adamw", "schedule": "cosine",
                 "tie_weights": True, "batch_size": 20, "block_size": 30, "lr": 1e-3, "weight_decay": 0.0,
                 "grad_clip": 0.25, "epochs": 6, "eval_interval": 500, "eval_tokens": 65536},
        "configs": [{}, {"embed": 200, "hidden": 200}, {"dropout": 0.3}, {"lr": 3e-3}],
        "sampler": "grid",
    },
    "shakespeare-char": {
        "description": "seed 002's char LSTM on Tiny Shakespeare (1 x 128 LSTM, embed 64, block 64, batch 32, Adam 1e-3, "
                       "10 epochs; reported final training loss ~1.28) and its neighbours",
        # the recipe as published: a plain nn.LSTM (no LayerNorm, untied head), torch's Adam defaults
        # (beta2 0.999, no weight decay), a constant rate, no clipping; one evaluation per epoch on all of valid
        "base": {"corpus": "tinyshakespeare", "tokenizer": "char", "model": "lstm", "layers": 1, "embed": 64,
                 "hidden": 128, "norm": False, "tie_weights": False, "dropout": 0.0, "block_size": 64,
                 "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "beta2": 0.999, "weight_decay": 0.0,
                 "schedule": "constant", "warmup_steps": 0, "grad_clip": 0.0, "epochs": 10, "eval_interval": 490,
                 "eval_tokens": 0},
        "configs": [{}, {"hidden": 256}, {"layers": 2}, {"lr": 3e-3}, {"dropout": 0.2}],
        "sampler": "grid",
    },
    "xlstm-vs-baselines": {
        # sizes chosen with count_params(): 7.74M / 7.60M / 7.63M parameters in all (the tied 33k-word
        # embedding is 6.66M of each), 1.08M / 0.95M / 0.97M outside the embedding
        "description": "LSTM, xLSTM and Transformer at matched parameter counts (~7.6M) on WikiText-2",
        "base": {"corpus": "wikitext2", "embed": 200, "block_size": 64, "batch_size": 32, "lr": 1e-3,
                 "dropout": 0.2, "epochs": 2, "eval_interval": 500, "eval_tokens": 65536},
        "configs": [{"model": "lstm", "hidden": 256, "layers": 2},
                    {"model": "xlstm", "hidden": 256, "layers": 2, "heads": 4},
                    {"model": "transformer", "layers": 2, "heads": 4}],
        "sampler": "grid",
    },
    "ptb-zaremba-small": {
        "description": "Zaremba et al. 2014 'small' PTB LSTM: 2 x 200, untied, no dropout, no LayerNorm, batch 20, "
                       "BPTT 20, uniform(-0.1, 0.1) init, SGD lr 1 halved every epoch after epoch 4, clip 5 (on the "
                       "loss summed over BPTT steps), 13 epochs",
        # norm off: picollm's LSTM adds a LayerNorm on its outputs by default, which the paper's model has not.
        # The paper (and TensorFlow's tutorial) sums the loss over the 20 BPTT steps; picollm averages it, so
        # its gradient is 20x smaller: lr 20 and clip 0.25 here are exactly the paper's lr 1 and clip 5.
        # eval_interval: one evaluation per epoch (2,324 steps of 20 x 20 words), on the whole valid split.
        "base": {"corpus": "ptb", "model": "lstm", "layers": 2, "embed": 200, "hidden": 200, "tie_weights": False,
                 "dropout": 0.0, "norm": False, "init_range": 0.1, "batch_size": 20, "block_size": 20,
                 "optimizer": "sgd", "lr": 20.0, "schedule": "step", "decay_start_epoch": 4, "lr_decay": 0.5,
                 "warmup_steps": 0, "grad_clip": 0.25, "weight_decay": 0.0, "epochs": 13, "eval_interval": 2324,
                 "eval_tokens": 0},
        "sampler": "grid",
    },
    # The medium and large recipes are for a GPU (batch_train.py --preset ptb-zaremba-medium --device cuda):
    # 39 and 55 epochs of 2 x 650 / 2 x 1500 would take days on two CPU cores. BPTT 35, so the summed-loss
    # lr 1 is lr 35 here and the clip norms 5 and 10 are 5/35 and 10/35.
    "ptb-zaremba-medium": {
        "description": "Zaremba et al. 2014 'medium' PTB LSTM (a GPU preset): 2 x 650, untied, dropout 0.5, batch 20, "
                       "BPTT 35, uniform(-0.05, 0.05), SGD lr 1 divided by 1.2 every epoch after epoch 6, clip 5, "
                       "39 epochs (test perplexity 82.7)",
        "base": {"corpus": "ptb", "model": "lstm", "layers": 2, "embed": 650, "hidden": 650, "tie_weights": False,
                 "dropout": 0.5, "norm": False, "init_range": 0.05, "batch_size": 20, "block_size": 35,
                 "optimizer": "sgd", "lr": 35.0, "schedule": "step", "decay_start_epoch": 6, "lr_decay": 1 / 1.2,
                 "warmup_steps": 0, "grad_clip": 5 / 35, "weight_decay": 0.0, "epochs": 39, "eval_interval": 1328,
                 "eval_tokens": 0},
        "sampler": "grid",
    },
    "ptb-zaremba-large": {
        "description": "Zaremba et al. 2014 'large' PTB LSTM (a GPU preset): 2 x 1500, untied, dropout 0.65, batch "
                       "20, BPTT 35, uniform(-0.04, 0.04), SGD lr 1 divided by 1.15 every epoch after epoch 14, "
                       "clip 10, 55 epochs (test perplexity 78.4)",
        "base": {"corpus": "ptb", "model": "lstm", "layers": 2, "embed": 1500, "hidden": 1500, "tie_weights": False,
                 "dropout": 0.65, "norm": False, "init_range": 0.04, "batch_size": 20, "block_size": 35,
                 "optimizer": "sgd", "lr": 35.0, "schedule": "step", "decay_start_epoch": 14,
                 "lr_decay": 1 / 1.15, "warmup_steps": 0, "grad_clip": 10 / 35, "weight_decay": 0.0, "epochs": 55,
                 "eval_interval": 1328, "eval_tokens": 0},
        "sampler": "grid",
    },
    "ptb-small-picollm": {
        "description": "PTB at ptb-zaremba-small's size (4.67M parameters against 4.65M) and CPU time, picollm's "
                       "recipe: tied embeddings with a 430 -> 200 projection, dropout 0.3, AdamW + warmup-stable-"
                       "decay, batch 32 x BPTT 35, 8 epochs",
        # Tying frees the 2M parameters of the untied head; they go into wider LSTM layers (430 instead of 200).
        # A token costs 1.5x the paper's model here (timed with --estimate), so 8 epochs take the CPU time of its
        # 13. AdamW, not the family's Muon: at 1,120 tokens a step, Muon's Newton-Schulz iterations on the
        # 1720 x 430 gate matrices cost as much as the forward and backward passes.
        "base": PTB_SMALL_PICOLLM,
        "sampler": "grid",
    },
    "ptb-xlstm-vs-lstm": {
        "description": "seed 000's question on PTB: xLSTM[1:1] 2 x 448 (4.69M parameters) against ptb-small-picollm's "
                       "LSTM (4.67M), same recipe and CPU time (5.6 epochs of the xLSTM cost 8 of the LSTM)",
        # the xLSTM first, so that `--n_runs 1` trains it beside a finished ptb-small-picollm run; a step of it
        # costs 1.42x the LSTM's (--estimate, both timed together), hence 8 / 1.42 epochs
        "base": PTB_SMALL_PICOLLM,
        "configs": [{"model": "xlstm", "hidden": 448, "heads": 4, "epochs": 5.6}, {}],
        "sampler": "grid",
    },
    "fast": {
        "description": "every family on Tiny Shakespeare, 2 sizes x 2 learning rates (x 2 activations for the "
                       "K-gram MLP), 300 steps each: a minute or two on 2 CPU cores with 2 workers",
        "base": {"corpus": "tinyshakespeare", "max_steps": 300, "eval_interval": 100, "eval_tokens": 4096,
                 "block_size": 64, "batch_size": 32, "warmup_steps": 30},
        "choices": {"lr": [3e-3, 1e-2]},
        "family_choices": {"kgram_mlp": {"activation": ["relu", "gelu"]}},
        "configs": [
            {"model": "kgram_mlp", "embed": 32, "hidden": 128, "k": 3},
            {"model": "kgram_mlp", "embed": 64, "hidden": 256, "k": 5, "inner_layers": 2},
            {"model": "lstm", "embed": 32, "hidden": 64, "layers": 1},
            {"model": "lstm", "embed": 64, "hidden": 128, "layers": 2},
            {"model": "xlstm", "embed": 32, "hidden": 64, "layers": 1, "heads": 2, "block_size": 32, "batch_size": 16},
            {"model": "xlstm", "embed": 32, "hidden": 64, "layers": 2, "heads": 2, "block_size": 32, "batch_size": 16},
            {"model": "transformer", "embed": 64, "layers": 1, "heads": 2},
            {"model": "transformer", "embed": 64, "layers": 2, "heads": 4},
        ],
        "sampler": "grid",
    },
}


# --------------------------------------------------------------------------------------------------
# the space
# --------------------------------------------------------------------------------------------------
@dataclass
class Space:
    """A validated search space (see the module docstring for the format)."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    choices: dict[str, list] = field(default_factory=dict)
    family_choices: dict[str, dict[str, list]] = field(default_factory=dict)
    family_base: dict[str, dict[str, Any]] = field(default_factory=dict)
    sampler: str = "grid"
    n_runs: int | None = None
    eta: int = 3
    continue_best: float = 0.0
    description: str = ""

    @classmethod
    def from_dict(cls, d: Any, name: str) -> Space:
        """Check the structure of a space dict; raise a one-line ConfigError naming what is wrong."""
        if not isinstance(d, dict):
            raise ConfigError(f"space {name}: expected a mapping with keys {', '.join(SPACE_KEYS)}; got {type(d).__name__}")
        unknown = sorted(set(d) - set(SPACE_KEYS))
        if unknown:
            hint = " (the axes go under 'choices'; 'sampler: grid' crosses them)" if "grid" in unknown else ""
            raise ConfigError(f"space {name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPACE_KEYS)}{hint}")
        base = _settings(d.get("base") or {}, f"space {name}: base")
        configs = d.get("configs", [{}])
        if not isinstance(configs, list) or not configs:
            raise ConfigError(f"space {name}: configs must be a non-empty list of mappings")
        configs = [_settings(c or {}, f"space {name}: configs[{i}]") for i, c in enumerate(configs)]
        choices = _axes(d.get("choices") or {}, f"space {name}: choices")
        family_choices = _per_family(d, "family_choices", name, _axes, "{field: [values]}")
        family_base = _per_family(d, "family_base", name, _settings, "{field: value}")
        for i, c in enumerate(configs):
            clash = sorted(set(c) & set(choices))
            if clash:
                raise ConfigError(f"space {name}: {', '.join(clash)} set in both configs[{i}] and choices; keep one")
        models = [c.get("model", base.get("model", _DEFAULT_MODEL)) for c in configs] + choices.get("model", [])
        for key, per_family in (("family_choices", family_choices), ("family_base", family_base)):
            if any("model" in fields_ for fields_ in per_family.values()):
                raise ConfigError(f"space {name}: {key} cannot set the model; put it in choices")
        for model in models:
            if model not in FAMILIES:
                raise ConfigError(f"space {name}: unknown model family {model!r}; choose from {', '.join(FAMILIES)}")
        sampler = d.get("sampler", "grid")
        if sampler not in SAMPLERS:
            raise ConfigError(f"space {name}: sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        n_runs, eta, cont = d.get("n_runs"), d.get("eta", 3), d.get("continue_best", 0)
        if n_runs is not None and (not _is_int(n_runs) or n_runs < 1):
            raise ConfigError(f"space {name}: n_runs must be a positive integer; got {n_runs!r}")
        if not _is_int(eta) or eta < 2:
            raise ConfigError(f"space {name}: eta must be an integer >= 2; got {eta!r}")
        if isinstance(cont, bool) or not isinstance(cont, int | float) or not (math.isfinite(cont) and cont >= 0):
            raise ConfigError(f"space {name}: continue_best must be a number of epochs >= 0; got {cont!r}")
        return cls(name=name, base=base, configs=configs, choices=choices, family_choices=family_choices,
                   family_base=family_base, sampler=sampler, n_runs=n_runs, eta=eta, continue_best=float(cont),
                   description=str(d.get("description", "")))

    def with_overrides(self, overrides: dict[str, Any]) -> Space:
        """The space with these settings fixed for every config (command-line overrides win over the space)."""
        overrides = _settings(overrides, "override")
        drop = set(overrides)
        return Space(name=self.name, base={**self.base, **overrides},
                     configs=[{k: v for k, v in c.items() if k not in drop} for c in self.configs],
                     choices={k: v for k, v in self.choices.items() if k not in drop},
                     family_choices={fam: {k: v for k, v in axes.items() if k not in drop}
                                     for fam, axes in self.family_choices.items()},
                     family_base={fam: {k: v for k, v in fixed.items() if k not in drop}
                                  for fam, fixed in self.family_base.items()},
                     sampler=self.sampler, n_runs=self.n_runs, eta=self.eta, continue_best=self.continue_best,
                     description=self.description)

    # -- enumeration ---------------------------------------------------------------------------------
    def _models(self, entry: dict) -> list[str]:
        if "model" in entry:
            return [entry["model"]]
        if "model" in self.choices:
            return list(self.choices["model"])
        return [self.base.get("model", _DEFAULT_MODEL)]

    def _axes(self, model: str) -> dict[str, list]:
        """The axes of one family: the shared choices, with the family's own lists added or replacing them."""
        axes = {k: v for k, v in self.choices.items() if k != "model"}
        axes.update(self.family_choices.get(model, {}))
        return axes

    def start(self, model: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A point before its axes: base, the family's base, the configs entry, the family."""
        return {**self.base, **self.family_base.get(model, {}), **entry, "model": model}

    def size(self) -> int:
        """Number of points in the space (before dedupe and validation)."""
        return sum(math.prod(len(v) for v in self._axes(m).values()) for e in self.configs for m in self._models(e))

    def points(self) -> Iterator[dict[str, Any]]:
        """Every point, in a fixed order: configs entries, then models, then the product of the axes."""
        for entry in self.configs:
            for model in self._models(entry):
                axes = self._axes(model)
                for values in itertools.product(*axes.values()):
                    yield {**self.start(model, entry), **dict(zip(axes, values))}

    def draw(self, rng: random.Random) -> dict[str, Any]:
        """One random point: a configs entry, then a family, then one value per axis of that family."""
        entry = rng.choice(self.configs)
        model = rng.choice(self._models(entry))
        axes = self._axes(model)
        return {**self.start(model, entry), **{k: rng.choice(v) for k, v in axes.items()}}


def _per_family(d: dict, key: str, name: str, parse: Callable[[Any, str], dict], form: str) -> dict[str, dict]:
    """d[key] as {family: parse(its mapping)}, every family a known one."""
    per_family = d.get(key) or {}
    if not isinstance(per_family, dict):
        raise ConfigError(f"space {name}: {key} must map a family to {form}")
    for family in per_family:
        if family not in FAMILIES:
            raise ConfigError(f"space {name}: {key} names unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    return {fam: parse(fields_ or {}, f"space {name}: {key}.{fam}") for fam, fields_ in per_family.items()}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _coerce(name: str, value: Any, where: str) -> Any:
    """value as RunConfig's type for `name` (ints may stand for floats; YAML's '1e-3' string is a float)."""
    kind = _FIELD_TYPES[name]
    if kind is float and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is int and _is_int(value):
        return value
    elif kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {name}={value!r} is not a {kind.__name__}")


def _settings(d: Any, where: str) -> dict[str, Any]:
    """A {field: value} mapping with every key a RunConfig field and every value allowed for the field (its
    type, choices and bounds: a space with lr -1 or nan is a mistake, not a combination to skip)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of RunConfig fields to values; got {type(d).__name__}")
    unknown = sorted(set(d) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"{where}: unknown config field(s) {', '.join(unknown)}; see `python main.py --help`")
    if NOT_IN_SPACES & set(d) and where != "override":
        raise ConfigError(f"{where}: {', '.join(sorted(NOT_IN_SPACES & set(d)))} is set on the command line, not in a space")
    values = {k: _coerce(k, v, where) for k, v in d.items()}
    for name, value in values.items():
        try:
            check_value(_FIELDS[name], value)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return values


def _axes(d: Any, where: str) -> dict[str, list]:
    """A {field: [values]} mapping: known fields, non-empty lists of the field's type."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must map RunConfig fields to lists of values; got {type(d).__name__}")
    axes = {}
    for name, values in d.items():
        if not isinstance(values, list):
            raise ConfigError(f"{where}.{name} must be a list of values; got {values!r}")
        if not values:
            raise ConfigError(f"{where}.{name} is an empty list; give at least one value")
        axes[name] = [_settings({name: v}, where)[name] for v in values]
    return axes


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_space(preset: str | None = None, path: str | Path | None = None) -> Space:
    """A preset by name or a user's YAML / JSON file (exactly one of them)."""
    if preset and path:
        raise ConfigError("give --preset or --space, not both")
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"space file {path} not found")
        from picollm.data.corpora import read_text_file

        text = read_text_file(path, "space file")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                d = yaml.safe_load(text)
            elif path.suffix == ".json":
                d = json.loads(text)
            else:
                raise ConfigError(f"space file {path} must end in .yaml, .yml or .json")
        except (json.JSONDecodeError, ValueError) as e:  # yaml.YAMLError is not a ValueError: caught below
            raise ConfigError(f"space file {path} is not valid JSON: {str(e).splitlines()[0]}") from None
        except Exception as e:
            if e.__class__.__module__.startswith("yaml"):
                raise ConfigError(f"space file {path} is not valid YAML: {' '.join(str(e).split())}") from None
            raise
        return Space.from_dict(d, name=path.stem)
    name = preset or "pico"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} or pass --space FILE")
    return Space.from_dict(PRESETS[name], name=name)


# --------------------------------------------------------------------------------------------------
# samplers
# --------------------------------------------------------------------------------------------------
class _Collector:
    """Builds RunConfigs from points, keeping the first of each fingerprint and counting invalid ones."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.configs: list[RunConfig] = []
        self.seen: set[str] = set()
        self.invalid = 0
        self.first_error = ""

    def add(self, point: dict[str, Any]) -> bool:
        try:
            cfg = RunConfig(**point)
        except ConfigError as e:  # a combination the family rejects: skipped (other errors, e.g. data, propagate)
            self.invalid += 1
            self.first_error = self.first_error or str(e)
            return False
        fp = cfg.fingerprint()
        if fp in self.seen:
            return False
        self.seen.add(fp)
        self.configs.append(cfg)
        return True

    def result(self) -> list[RunConfig]:
        if not self.configs:
            raise ConfigError(f"space {self.space.name} has no valid config: {self.first_error}")
        if self.invalid:
            log.warning(f"space {self.space.name}: skipped {self.invalid} invalid combination(s), e.g. {self.first_error}")
        return self.configs


def grid_configs(space: Space, n_runs: int | None = None) -> list[RunConfig]:
    """Every valid point of the space in order, one per fingerprint (the first n_runs if given)."""
    c = _Collector(space)
    for point in space.points():
        c.add(point)
        if n_runs and len(c.configs) >= n_runs:
            break
    return c.result()


def random_configs(space: Space, n_runs: int, seed: int) -> list[RunConfig]:
    """n_runs distinct (by fingerprint) valid configs drawn with random.Random(seed).

    When the space holds no more than n_runs points, it is enumerated and shuffled, so a small space
    gives all its configs and never loops looking for a new one.
    """
    rng = random.Random(seed)
    c = _Collector(space)
    if space.size() <= n_runs:
        points = list(space.points())
        rng.shuffle(points)
        for point in points:
            c.add(point)
        if len(c.configs) < n_runs:
            log.info(f"space {space.name} has only {len(c.configs)} distinct valid configs (asked for {n_runs})")
        return c.result()
    attempts = 0
    while len(c.configs) < n_runs and attempts < 100 * n_runs + 1000:
        c.add(space.draw(rng))
        attempts += 1
    if len(c.configs) < n_runs:
        log.info(f"space {space.name}: found {len(c.configs)} distinct valid configs in {attempts} draws "
                 f"(asked for {n_runs})")
    return c.result()


def sample(space: Space, sampler: str | None = None, n_runs: int | None = None, seed: int = 0) -> list[RunConfig]:
    """The configs a batch trains: sampler / n_runs default to the space's own (grid, all points)."""
    sampler = sampler or space.sampler
    n_runs = space.n_runs if n_runs is None else n_runs  # 0 is a mistake, not "all"
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if sampler in OPTUNA_SAMPLERS:
        raise ConfigError(f"--sampler {sampler} chooses configs as results come in: use batch_train.py / train_batch")
    if n_runs is not None and n_runs < 1:
        raise ConfigError(f"--n_runs must be >= 1; got {n_runs}")
    if sampler == "grid":
        return grid_configs(space, n_runs)
    return random_configs(space, n_runs or min(space.size(), 16), seed)


# --------------------------------------------------------------------------------------------------
# successive halving: the schedule (picollm.sweep.batch runs it)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    fraction: float
    """share of each config's full step budget trained by the end of this rung"""
    n_in: int
    """configs trained in this rung"""
    n_keep: int
    """configs that go on to the next rung (0 for the last)"""


def halving_schedule(n: int, eta: int = 3) -> list[Rung]:
    """Rungs of successive halving for n configs: keep the best max(1, n // eta) each time; the last rung
    trains the survivors to their full budget, and rung i trains to eta**-(rungs left) of it."""
    if n < 1 or eta < 2:
        raise ConfigError(f"successive halving needs n >= 1 configs and eta >= 2; got n={n}, eta={eta}")
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    last = len(sizes) - 1
    return [Rung(fraction=float(eta) ** (i - last), n_in=s, n_keep=sizes[i + 1] if i < last else 0)
            for i, s in enumerate(sizes)]


def rung_budget(fraction: float, total_steps: int, eval_interval: int) -> int:
    """Steps to train by the end of a rung: the fraction of the total, rounded up to an evaluation point
    (so a config continued later has exactly the metrics of an uninterrupted run), at most the total."""
    steps = max(1, math.ceil(fraction * total_steps))
    return min(total_steps, math.ceil(steps / eval_interval) * eval_interval)


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------
def count_params(cfg: RunConfig, vocab_size: int | None = None) -> int:
    """Trainable parameters of cfg's model, built but not trained (the vocabulary is read off the corpus's
    tokenizer unless given)."""
    from picollm.data.batching import prepare_data
    from picollm.models import build_model

    if vocab_size is None:
        r = cfg.resolved()
        vocab_size = prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[0].vocab_size
    return build_model(cfg, vocab_size).num_params()
