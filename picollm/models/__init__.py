"""The model registry: family name -> Family (where its model and config classes are), and `build_model`.

Every family's config dataclass names its fields after RunConfig's, so which run settings a family uses
is read off its config (and the rest are left out of the run's fingerprint). Adding a family: one module and
one line in the list below (README.md beside this file says what the module must hold).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from picollm.core.errors import ConfigError

if TYPE_CHECKING:
    from picollm.config import RunConfig
    from picollm.models.base import LanguageModel

@dataclass(frozen=True)
class Family:
    """One model family: where its code is (imported only when a model is built, so an optional extra stays
    optional and the registry stays free of torch) and what the commands and the study need to know of it."""

    name: str
    module: str  # e.g. "picollm.models.lstm.model"; any importable module, so a family can live outside the package
    model_class: str  # a LanguageModel subclass of that module
    config_class: str  # its @dataclass config, whose fields are named after RunConfig's settings
    label: str  # how plots and tables name it
    heatmap_axes: tuple[str, str] = ("embed", "hidden")  # the two settings the study's heatmap crosses
    default: bool = True  # trained by `main.py` when no --models are given (False: needs an extra)
    config_module: str | None = None  # where config_class is, if not in `module`: the built-in families keep it
    # in a module without torch, so fingerprinting a run (a dry run, --help) never imports torch


#: every family, in the order the commands, the study and its colours use. Add one with register_family().
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family to the registry (or replace the one of that name); everything that lists families reads
    FAMILIES, so this is the one line that makes a new model trainable, searchable, analysable and plotted."""
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    FAMILIES.pop(name, None)


def default_families() -> list[str]:
    return [name for name, family in FAMILIES.items() if family.default]


def adopt_families(families: Iterable[Family]) -> None:
    """Register here the families of another process (a worker gets its batch's): a family registered at run
    time lives only in the process that registered it. Its module must be importable here too."""
    for family in families:
        if FAMILIES.get(family.name) != family:
            register_family(family)


def families_initializer() -> Callable[[], None]:
    """A worker initializer that registers this process's model families in the worker (adopt_families)."""
    return functools.partial(adopt_families, tuple(FAMILIES.values()))


for _entry in (
    Family("kgram_mlp", "picollm.models.kgram_mlp.model", "KGramMLP", "KGramMLPConfig", "K-gram MLP",
           ("embed", "k"), config_module="picollm.models.kgram_mlp.config"),
    Family("lstm", "picollm.models.lstm.model", "LSTM", "LSTMConfig", "LSTM",
           config_module="picollm.models.lstm.config"),
    Family("xlstm", "picollm.models.xlstm.model", "XLSTM", "XLSTMConfig", "xLSTM (ours)",
           config_module="picollm.models.xlstm.config"),
    Family("transformer", "picollm.models.transformer.model", "Transformer", "TransformerConfig", "Transformer",
           ("embed", "layers"), config_module="picollm.models.transformer.config"),
    Family("xlstm_lib", "picollm.models.xlstm_lib.model", "XLSTMLib", "XLSTMLibConfig", "xLSTM (library)",
           default=False, config_module="picollm.models.xlstm_lib.config"),
):
    register_family(_entry)


def _entry_of(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_model_class(name: str) -> type:
    family = _entry_of(name)
    return getattr(importlib.import_module(family.module), family.model_class)


def family_config_class(name: str) -> type:
    family = _entry_of(name)
    return getattr(importlib.import_module(family.config_module or family.module), family.config_class)


#: what the RECIPE_SETTINGS of picollm.config (--optimizer auto, an unset --lr, ...) mean for a family whose config
#: class names no RECIPE (or leaves a key out): the recipe every family trained with before the time-to-quality
#: work. Changing a value here renames every run that uses it: add keys, never edit them.
DEFAULT_RECIPE: dict[str, Any] = {"optimizer": "adamw", "schedule": "cosine", "lr": 1e-3, "min_lr_ratio": 0.1,
                                  "decay_frac": 0.4, "batching": "random"}


def family_recipe(name: str) -> dict[str, Any]:
    """The family's default optimizer, schedule and rates: its config class's RECIPE over DEFAULT_RECIPE."""
    return {**DEFAULT_RECIPE, **getattr(family_config_class(name), "RECIPE", {})}


def family_fields(name: str) -> set[str]:
    """The RunConfig settings that family `name` uses."""
    return {f.name for f in dataclasses.fields(family_config_class(name))} - {"vocab_size"}


def family_config(cfg: RunConfig, vocab_size: int):
    """The family's own config dataclass, filled from the run config (validates it); a setting left unset takes
    the dataclass's default, so pass a resolved config to get the family's recipe (build_model does)."""
    config_cls = family_config_class(cfg.model)
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(config_cls) if f.name != "vocab_size"}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return config_cls(vocab_size=vocab_size, **kwargs)


def check_family_config(cfg: RunConfig) -> None:
    """Raise ConfigError if the family rejects the settings (placeholder vocabulary size)."""
    family_config(cfg, vocab_size=2)


def build_model(cfg: RunConfig, vocab_size: int) -> LanguageModel:
    """Instantiate the family named by cfg.model for a vocabulary of `vocab_size` tokens."""
    model_cls = family_model_class(cfg.model)
    return model_cls(family_config(cfg.resolved(), vocab_size))  # the recipe's qk_scale; split_qkv only with Muon
