"""Model registry: family name -> (model class, config dataclass), and `build_model(cfg, vocab_size)`.

Every family's config dataclass names its fields after RunConfig's, so which run settings a family uses
is read off its config (and the rest are left out of the run's fingerprint).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from picollm.errors import ConfigError

if TYPE_CHECKING:
    from picollm.config import RunConfig
    from picollm.models.base import LanguageModel

#: family name -> (module, model class, config class); imported lazily so optional extras stay optional
FAMILIES: dict[str, tuple[str, str, str]] = {
    "kgram_mlp": ("picollm.models.kgram_mlp", "KGramMLP", "KGramMLPConfig"),
    "lstm": ("picollm.models.lstm", "LSTM", "LSTMConfig"),
    "xlstm": ("picollm.models.xlstm", "XLSTM", "XLSTMConfig"),
    "xlstm_lib": ("picollm.models.xlstm_lib", "XLSTMLib", "XLSTMLibConfig"),
    "transformer": ("picollm.models.transformer", "Transformer", "TransformerConfig"),
}


def _family(name: str) -> tuple[type, type]:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    module, model_cls, config_cls = FAMILIES[name]
    mod = importlib.import_module(module)
    return getattr(mod, model_cls), getattr(mod, config_cls)


def family_config_class(name: str) -> type:
    return _family(name)[1]


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
    model_cls, _ = _family(cfg.model)
    return model_cls(family_config(cfg.resolved(), vocab_size))  # the recipe's qk_scale; split_qkv only with Muon
