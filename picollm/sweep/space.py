"""Search spaces: the named presets (picollm/sweep/presets/<name>.yaml) and users' files, one format.

A space is a dict (a preset's YAML file, picollm/sweep/presets/<name>.yaml, or a YAML / JSON file passed to
``batch_train.py --space``; the same loader reads both):

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
    sampler: grid                                        # a name of picollm.sweep.samplers (default grid)
    n_runs: 20                                           # configs to draw (random, halving, Optuna's)
    eta: 3                                               # halving: keep the best 1/eta at every rung
    continue_best: 50                                    # epochs for the best run afterwards (0 = off)

A config is base | family base | configs entry | one value per choice | one value per family choice (later
wins; a field may not be in both `configs` and `choices`). Every key must be a RunConfig field; values are checked
against the field's type (YAML's ``1e-3`` string is read as a float). The samplers (grid, random, halving,
Optuna's) are picollm.sweep.samplers.

Configs that repeat a fingerprint (they differ only in settings their family ignores) are kept once, and
combinations that RunConfig rejects are skipped; a space with no valid config at all is a one-line error.

Adding a preset: write picollm/sweep/presets/<name>.yaml in this format (comments say where its settings come
from); ``--preset <name>`` finds it.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.settings import check_value
from picollm.data.corpora import read_text_file
from picollm.models import FAMILIES
from picollm.sweep.samplers import SAMPLERS

SPACE_KEYS = ("description", "base", "configs", "choices", "family_base", "family_choices", "sampler", "n_runs", "eta",
              "continue_best")
#: set on the command line, not in a space (a space names what to train, not where to put it)
NOT_IN_SPACES = frozenset({"out_dir"})
_FIELDS = {f.name: f for f in fields(RunConfig)}
_FIELD_TYPES = {f.name: f.metadata.get("kind") or type(f.default) for f in fields(RunConfig)}
_DEFAULT_MODEL = next(f.default for f in fields(RunConfig) if f.name == "model")
#: where the presets are: package data, beside this module
PRESETS_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "pico"

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
def preset_names() -> list[str]:
    """The presets, by name: the YAML files of picollm/sweep/presets/."""
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


class _Presets(Mapping):
    """Preset name -> its space dict, read from its YAML file when asked for."""

    def __getitem__(self, name: str) -> Any:
        if name not in preset_names():
            raise KeyError(name)
        return read_space_file(PRESETS_DIR / f"{name}.yaml")

    def __iter__(self) -> Iterator[str]:
        return iter(preset_names())

    def __len__(self) -> int:
        return len(preset_names())


#: every preset: name -> its space dict
PRESETS: Mapping[str, Any] = _Presets()


def read_space_file(path: Path) -> Any:
    """The dict a space file holds (.yaml / .yml / .json), or a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"space file {path} not found")
    text = read_text_file(path, "space file")
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if path.suffix == ".json":
            return json.loads(text)
        raise ConfigError(f"space file {path} must end in .yaml, .yml or .json")
    except yaml.YAMLError as e:
        raise ConfigError(f"space file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"space file {path} is not valid JSON: {str(e).splitlines()[0]}") from None


def load_space(preset: str | None = None, path: str | Path | None = None) -> Space:
    """A preset by name or a user's YAML / JSON file (exactly one of them), read by the same loader."""
    if preset and path:
        raise ConfigError("give --preset or --space, not both")
    if not path:
        name = preset or DEFAULT_PRESET
        if name not in preset_names():
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())} or pass --space FILE")
        path = PRESETS_DIR / f"{name}.yaml"
    path = Path(path)
    data = read_space_file(path)
    try:
        return Space.from_dict(data, name=path.stem)
    except ConfigError as e:  # "space <name>: ..." names the space; the user looks for the file
        raise ConfigError(f"{e} (in {path})") from None


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------
def count_params(cfg: RunConfig, vocab_size: int | None = None) -> int:
    """Trainable parameters of cfg's model, built but not trained (the vocabulary is read off the corpus's
    tokenizer unless given)."""
    # torch: only where a model is built, never to read or sample a space
    from picollm.data.batching import prepare_data
    from picollm.models import build_model

    if vocab_size is None:
        r = cfg.resolved()
        vocab_size = prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[0].vocab_size
    return build_model(cfg, vocab_size).num_params()
