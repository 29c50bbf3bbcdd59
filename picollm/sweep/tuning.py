"""Model-based search with Optuna (TPE, Gaussian processes, CMA-ES, NSGA-II) behind picollm's fingerprints.

    batch_train.py --preset pico --sampler tpe --n_runs 40 --workers 2 [--pruner median]
    batch_train.py --space s.yaml --sampler nsga2 --objectives val_loss,train_seconds

Optuna suggests, picollm trains: the batch's sampler (picollm.sweep.samplers.optuna) asks OptunaSearch for a
trial, whose parameters become a RunConfig over the same search space as the other samplers (base, configs,
choices and per-family choices, sampled define-by-run: a family's own settings are parameters of that family
only), trains it through the usual worker pool, and tells Optuna the run's result. What picollm adds is
deduplication: Optuna may suggest a config it already tried (two parameter sets with one fingerprint, or the
same set twice); such a trial is told the recorded result without training, and --n_runs counts distinct
configs.

Optuna's study of the space (its trials) is stored beside the runs, in Optuna's journal file storage
(<out_dir>/.optuna/<space>.journal), so a batch killed at any moment is resumed by running the same command: trials that were running are
trained again from their config (train_run resumes the run from last.pt), no trial is lost or told twice.
The sampler is re-seeded from the number of trials asked before every ask, so the suggestions after a
restart are those an uninterrupted batch would have made.
`optuna-dashboard <out_dir>/.optuna/<space>.journal` shows it.

Pruning (--pruner median | hyperband): each run reports its validation loss at every evaluation to its
trial from inside the worker process (local or Ray: the journal file must then be on a shared filesystem);
a run the pruner stops is marked `stopped` with its metrics kept, like a run eliminated by halving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picollm.config import RunConfig
from picollm.core.errors import CheckpointError, ConfigError
from picollm.core.log import get_logger
from picollm.runs.layout import FINISHED, read_status, run_summary

if TYPE_CHECKING:  # the space module reads the sampler registry, which imports this module: a type only
    import optuna

    from picollm.sweep.space import Space

log = get_logger()

PRUNERS = ("none", "median", "hyperband")
OBJECTIVES = ("val_loss", "train_seconds", "params")
#: asks in a row that bring no new config before the space counts as exhausted
MAX_REPEATS = 200
#: the --sampler names of Optuna's samplers (make_sampler)
OPTUNA_SAMPLERS = ("tpe", "gp", "cmaes", "nsga2")


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("--sampler tpe|gp|cmaes|nsga2 needs Optuna: pip install -e .[optuna]") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def parse_objectives(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or any(n not in OBJECTIVES for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"--objectives must be a comma list of distinct {', '.join(OBJECTIVES)}; got {text!r}")
    return names


def check_settings(sampler: str, pruner: str, objectives: list[str]) -> None:
    """The combinations Optuna does not support, as one-line errors before anything runs."""
    if len(objectives) > 1 and pruner != "none":
        raise ConfigError("--pruner works with one objective only (Optuna cannot prune multi-objective trials)")
    if len(objectives) > 1 and sampler == "cmaes":
        raise ConfigError("--sampler cmaes optimises one objective; use --sampler nsga2 (or tpe) for several")
    if sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("--sampler cmaes needs the cmaes package: pip install -e .[optuna]") from None


def journal_path(out_dir: Path, space_name: str) -> Path:
    return Path(out_dir) / ".optuna" / f"{space_name}.journal"


#: the fix for a damaged journal: the search starts again, and the trials it suggests again find their runs
#: finished on disk (told their results, not retrained)
JOURNAL_FIX = "delete it to start the search again (the runs it trained are kept and not trained again)"


def check_journal(path: Path) -> None:
    """A one-line ConfigError unless the journal is one Optuna can replay: every line a JSON object with an
    integer op_code, the last line complete. Optuna stops on a bad line with a traceback, and appends after a
    line cut off mid-write, which makes the file unreadable for good. An empty journal is a new study."""
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data.splitlines()
    for number, line in enumerate(lines, 1):
        if number == len(lines) and not data.endswith(b"\n"):
            raise ConfigError(f"the Optuna journal {path} ends in a line cut off mid-write; {JOURNAL_FIX}")
        try:
            entry = json.loads(line)
        except ValueError:  # not JSON, or bytes that are not text
            raise ConfigError(f"the Optuna journal {path} is damaged (line {number} is not JSON); {JOURNAL_FIX}") from None
        if not isinstance(entry, dict) or type(entry.get("op_code")) is not int:
            raise ConfigError(f"the Optuna journal {path} is damaged (line {number} is not an Optuna operation); "
                              f"{JOURNAL_FIX}")


def storage(path: Path):
    optuna = import_optuna()
    from optuna.storages.journal import JournalFileBackend  # the optuna extra, which import_optuna() checked

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial `number` of a batch with --seed seed: distinct for every (seed, number)
    pair below a million trials (seed + number would make seed 1's study seed 0's, one trial later)."""
    return (seed * 1_000_003 + number) % 2**32


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    optuna = import_optuna()
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "gp": lambda: optuna.samplers.GPSampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
                "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed)}
    return samplers[name]()


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    optuna = import_optuna()
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner}[name]()


# --------------------------------------------------------------------------------------------------
# the space, define-by-run
# --------------------------------------------------------------------------------------------------
def _numeric(values: list) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def suggest_point(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """One point of the space chosen by the trial: a configs entry, a family, then one value per axis.

    A numeric axis is suggested as an index into its sorted values (an integer parameter), so samplers that
    model order (TPE, GP, CMA-ES) can use it; other axes are categorical. An axis a family has of its own
    (family_choices) is the parameter "<family>.<name>", so each family's settings have their own history.
    """
    entry = space.configs[trial.suggest_int("config", 0, len(space.configs) - 1)] if len(space.configs) > 1 \
        else space.configs[0]
    models = space._models(entry)
    model = trial.suggest_categorical("model", models) if len(models) > 1 else models[0]
    own = space.family_choices.get(model, {})
    point = space.start(model, entry)
    for name, values in space._axes(model).items():
        param = f"{model}.{name}" if name in own else name
        if _numeric(values):
            ordered = sorted(set(values))
            point[name] = ordered[trial.suggest_int(param, 0, len(ordered) - 1)]
        else:
            point[name] = trial.suggest_categorical(param, list(dict.fromkeys(values)))
    return point


# --------------------------------------------------------------------------------------------------
# pruning, inside the worker that trains the run
# --------------------------------------------------------------------------------------------------
def pruning_callback(trial_info: dict[str, Any]) -> Callable[[int, float], str | None]:
    """For train_run: report each evaluation's val loss to the trial; the stop reason when it is pruned."""
    optuna = import_optuna()
    study = optuna.load_study(study_name=trial_info["study"], storage=storage(Path(trial_info["journal"])),
                              pruner=make_pruner(trial_info["pruner"]))
    trial = optuna.trial.Trial(study, trial_info["trial_id"])
    reported = set(study._storage.get_trial(trial_info["trial_id"]).intermediate_values)

    def on_evaluation(step: int, val_loss: float) -> str | None:
        if step not in reported:  # a resumed run evaluates again the steps it had reported before it stopped
            trial.report(val_loss, step)
            reported.add(step)
        if trial.should_prune():
            return (f"pruned by the {trial_info['pruner']} pruner (trial {trial.number}) at step {step}: "
                    f"val loss {val_loss:.4f}")
        return None

    return on_evaluation


# --------------------------------------------------------------------------------------------------
# the search: Optuna's study of the space, asked and told
# --------------------------------------------------------------------------------------------------
@dataclass
class TrialRun:
    """An Optuna trial and the config it trains."""

    trial: Any
    cfg: RunConfig


@dataclass
class OptunaSearch:
    """Optuna's ask-and-tell over a space, with picollm's deduplication; see the module docstring.
    prepare(cfg) applies the batch's own changes (step cap, out_dir, ...) to a suggested config before it is
    fingerprinted."""

    optuna_study: Any
    """the optuna.Study holding the trials"""
    space: Space
    sampler: str
    seed: int
    pruner: str
    objectives: list[str]
    journal: Path
    prepare: Callable[[RunConfig], RunConfig]
    results: dict[str, tuple[str, list[float] | None]] = field(default_factory=dict)
    """fingerprint -> (state, values) of every config told so far"""
    waiting: dict[str, list[Any]] = field(default_factory=dict)
    """fingerprint -> duplicate trials waiting for the trial that trains it"""

    def distinct(self) -> int:
        return len({t.user_attrs["fingerprint"] for t in self.optuna_study.trials if "fingerprint" in t.user_attrs})

    def unfinished(self) -> list[TrialRun]:
        """Trials a killed batch left running, taken up where they stopped: each is told, queued behind the
        trial that trains its config, or trained again (its run resumes from last.pt). A trial killed before
        its config was recorded has no config to take up: it is failed and marked `killed`, and the
        sampler's seeds skip it (see asked), so the suggestions that follow are the uninterrupted batch's."""
        optuna = import_optuna()
        out = []
        for t in self.optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.optuna_study, t._trial_id)
            if "config" not in t.user_attrs:
                if "invalid" not in t.user_attrs:
                    trial.set_user_attr("killed", True)
                self.optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if (resumed := self.place(trial, RunConfig.from_record(json.loads(t.user_attrs["config"])))):
                out.append(resumed)
        return out

    def remember_told(self) -> None:
        optuna = import_optuna()
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        for t in self.optuna_study.get_trials(deepcopy=False, states=done):
            if "fingerprint" in t.user_attrs:
                self.results.setdefault(t.user_attrs["fingerprint"], (t.state.name, t.values))

    def asked(self) -> int:
        """Trials the batch has asked for, leaving out those a kill cut short before their config was
        recorded: an uninterrupted batch never asked for them."""
        return sum("config" in t.user_attrs or "invalid" in t.user_attrs
                   for t in self.optuna_study.get_trials(deepcopy=False))

    def ask(self) -> TrialRun | None:
        """The next trial with a config no trial has trained yet; duplicates are told (or queued) on the way.
        None when the space has no new config to offer."""
        optuna = import_optuna()
        for _ in range(MAX_REPEATS):
            self.optuna_study.sampler = make_sampler(self.sampler, trial_seed(self.seed, self.asked()))
            trial = self.optuna_study.ask()
            try:
                cfg = self.prepare(RunConfig(**suggest_point(trial, self.space)))
            except ConfigError as e:  # a combination the family rejects: not a config, nothing to train
                trial.set_user_attr("invalid", str(e))
                self.optuna_study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            # the config first, in one journal entry: a trial that has it can be taken up after a kill
            trial.set_user_attr("config", json.dumps(cfg.to_dict()))
            if (t := self.place(trial, cfg)) is not None:
                return t
        log.info(f"the space offered no new config in {MAX_REPEATS} suggestions: stopping at {self.distinct()}")
        return None

    def place(self, trial: Any, cfg: RunConfig) -> TrialRun | None:
        """A trial with its config recorded: told the result its config already has, queued behind the trial
        training it, told the result of its finished run on disk, or returned to be trained."""
        fp = cfg.fingerprint()
        trial.set_user_attr("fingerprint", fp)
        trial.set_user_attr("run", cfg.run_name())
        if fp in self.results:
            self._tell(trial, *self.results[fp], duplicate=True)
        elif fp in self.waiting:
            self.waiting[fp].append(trial)
        elif read_status(Path(cfg.out_dir) / cfg.run_name())["status"] in FINISHED:
            self.finish(TrialRun(trial, cfg))
        else:
            self.waiting[fp] = []
            return TrialRun(trial, cfg)
        return None

    def job_info(self, t: TrialRun) -> dict[str, Any] | None:
        if self.pruner == "none":
            return None
        return {"study": self.optuna_study.study_name, "journal": str(self.journal), "pruner": self.pruner,
                "trial_id": t.trial._trial_id}

    def outcome(self, cfg: RunConfig) -> tuple[str, list[float] | None]:
        """(Optuna state name, objective values) of a run that has stopped training."""
        run_dir = Path(cfg.out_dir) / cfg.run_name()
        status = read_status(run_dir)["status"]
        try:
            row = run_summary(run_dir) if (run_dir / "config.json").exists() else {}
        except CheckpointError as e:  # a damaged run file fails this trial only
            log.warning(f"warning: {cfg.run_name()}: {e}; its trial is told it failed")
            return "FAIL", None
        if status == "stopped":
            return "PRUNED", None
        if status != "done" or row.get("val_loss") is None or not math.isfinite(row["val_loss"]):
            return "FAIL", None
        return "COMPLETE", [float(row[name]) for name in self.objectives]

    def finish(self, t: TrialRun) -> None:
        fp = t.cfg.fingerprint()
        state, values = self.outcome(t.cfg)
        self.results[fp] = (state, values)
        self._tell(t.trial, state, values)
        for dup in self.waiting.pop(fp, []):
            self._tell(dup, state, values, duplicate=True)

    def _tell(self, trial: Any, state: str, values: list[float] | None, duplicate: bool = False) -> None:
        optuna = import_optuna()
        if duplicate:
            trial.set_user_attr("duplicate", True)
        if state == "COMPLETE":
            self.optuna_study.tell(trial, values)
        else:
            self.optuna_study.tell(trial, state=optuna.trial.TrialState[state])


def open_search(out_dir: Path, space: Space, sampler: str, seed: int, pruner: str, objectives: list[str],
                prepare: Callable[[RunConfig], RunConfig]) -> OptunaSearch:
    """The search over the space, its Optuna study in <out_dir>/.optuna (created, or loaded to continue)."""
    optuna = import_optuna()
    journal = journal_path(out_dir, space.name)
    try:
        study = optuna.create_study(study_name=space.name, storage=storage(journal), load_if_exists=True,
                                    sampler=make_sampler(sampler, seed), pruner=make_pruner(pruner),
                                    directions=["minimize"] * len(objectives))
    except (KeyError, IndexError, TypeError, AttributeError) as e:  # operations check_journal cannot see are wrong
        raise ConfigError(f"the Optuna journal {journal} is damaged ({e.__class__.__name__}: {e}); {JOURNAL_FIX}") from None
    if study.user_attrs.get("objectives", objectives) != objectives:
        raise ConfigError(f"the study in {journal} optimises {','.join(study.user_attrs['objectives'])}; use the "
                          "same --objectives, or another --out_dir")
    study.set_user_attr("objectives", objectives)
    search = OptunaSearch(study, space, sampler, seed, pruner, objectives, journal, prepare)
    search.remember_told()
    return search
