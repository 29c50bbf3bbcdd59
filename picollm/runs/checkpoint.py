"""The checkpoint format: best.pt and last.pt, their one writer and their one reader, and loading a run.

    best.pt   format_version, model, step, val_loss, fingerprint
              the weights at the run's lowest validation loss so far
    last.pt   format_version, model, optimizer, train_state, metrics, train_log, carry_state, rng, step, fingerprint
              everything a resumed run needs to continue exactly where it stopped (picollm.train.loop);
              a run with --ema adds "average", the moving average's state (best.pt's model is the average)

Each file is torch.save of a dict of tensors and plain Python values, loaded with torch.load(weights_only=True):
a file that holds pickled objects (which could run code when loaded) is refused. FORMAT_VERSION numbers the
shape. Files written before it existed have no "format_version" and are version 0; load_checkpoint upgrades
every older version to the current shape here, in one place, so no reader needs a default for a missing key.
A file from a newer picollm is refused with a one-line error. To change the shape: bump FORMAT_VERSION, write
the new keys in write_best / write_last, and teach upgrade() to fill them in for the older versions.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picollm.config import RunConfig
from picollm.core.atomic import atomic_torch_save
from picollm.core.errors import CheckpointError
from picollm.core.version import __version__
from picollm.models import build_model
from picollm.runs.layout import RETRAIN, read_json
from picollm.runs.portable import locate_corpus

if TYPE_CHECKING:
    import torch

#: the version of the checkpoint format this picollm writes (and the newest it reads); 0: no "format_version"
FORMAT_VERSION = 1
#: the step recorded for a version-0 file without one (picollm always wrote it; a hand-made file may not)
UNKNOWN_STEP = -1
#: what resuming needs of a last.pt (write_last's parts); best.pt needs only "model"
LAST_KEYS = ("model", "optimizer", "train_state", "metrics", "train_log", "carry_state", "rng", "step", "fingerprint")
#: the types of a checkpoint's parts where they are present (a file of the right format with a part of the wrong
#: type is as damaged as a truncated one)
PART_TYPES: dict[str, tuple[type, ...]] = {
    "model": (dict,), "optimizer": (dict,), "train_state": (dict,), "metrics": (list,), "train_log": (list,),
    "rng": (dict,), "step": (int,), "fingerprint": (str, type(None)), "average": (dict,)}
#: what a damaged checkpoint's error tells the user to do
DELETE_CHECKPOINT = "delete it to retrain from scratch"


def checkpoint_path(run_dir: Path | str, which: str) -> Path:
    """<run_dir>/best.pt or <run_dir>/last.pt."""
    return Path(run_dir) / f"{which}.pt"


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def _write(path: Path, parts: dict[str, Any]) -> None:
    atomic_torch_save({"format_version": FORMAT_VERSION, **parts}, path)


def write_best(run_dir: Path | str, *, model: dict[str, Any], step: int, val_loss: float, fingerprint: str) -> None:
    """best.pt: the model's state_dict at its best validation loss so far."""
    _write(checkpoint_path(run_dir, "best"), {"model": model, "step": step, "val_loss": val_loss,
                                               "fingerprint": fingerprint})


def write_last(run_dir: Path | str, *, model: dict[str, Any], optimizer: dict[str, Any], train_state: dict[str, Any],
               metrics: list[dict], train_log: list[dict], carry_state: Any, rng: dict[str, Any], step: int,
               fingerprint: str, average: dict[str, Any] | None = None) -> None:
    """last.pt: what resuming needs. train_state: the trainer's counters and the schedule's state; metrics and
    train_log: the rows so far; carry_state: the recurrent state carried between stream segments (on the CPU);
    rng: {"torch": the CPU generator's state, "cuda": the GPU's or None}; average: the state of the weights'
    moving average (--ema), written only for a run that keeps one."""
    parts = {"model": model, "optimizer": optimizer, "train_state": train_state, "metrics": metrics,
             "train_log": train_log, "carry_state": carry_state, "rng": rng, "step": step, "fingerprint": fingerprint}
    if average is not None:
        parts["average"] = average
    _write(checkpoint_path(run_dir, "last"), parts)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def upgrade(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint dict in the current shape (FORMAT_VERSION); a newer version is a one-line CheckpointError."""
    version = ckpt.get("format_version", 0)
    if type(version) is not int or version < 0:
        raise CheckpointError(f"checkpoint {path} has an invalid format_version {version!r}; delete it to retrain "
                              "from scratch")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}, newer than this picollm "
                              f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade picollm to load it")
    if version == 0:  # before the format had a version: the defaults its readers used to apply one by one
        ckpt.setdefault("step", UNKNOWN_STEP)
        ckpt.setdefault("fingerprint", None)  # None matches no config: such a last.pt is never resumed
        if "optimizer" in ckpt:  # a last.pt
            ckpt.setdefault("train_log", [])  # written before train_log.csv existed
            if isinstance(ckpt.get("rng"), dict):
                ckpt["rng"].setdefault("cuda", None)
    ckpt["format_version"] = FORMAT_VERSION
    return ckpt


def check_parts(ckpt: dict[str, Any], path: Path, require: tuple[str, ...]) -> None:
    """A one-line CheckpointError for a checkpoint that lacks a part in `require` or holds one of the wrong type."""
    missing = [k for k in require if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} has no {', '.join(missing)}; {DELETE_CHECKPOINT}")
    wrong = [k for k, kinds in PART_TYPES.items()
             if k in ckpt and (not isinstance(ckpt[k], kinds) or isinstance(ckpt[k], bool))]
    if wrong:
        raise CheckpointError(f"checkpoint {path} is corrupt ({', '.join(f'{k} is of type {type(ckpt[k]).__name__}' for k in wrong)}); "
                              f"{DELETE_CHECKPOINT}")


def _is_pickle(path: Path) -> bool:
    """Whether the file is what torch.save writes, a zip archive or (before torch 1.6) a pickle stream."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"  # pickle's PROTO opcode, which protocols 2 and up begin with


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu",
                    require: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """A checkpoint in the current shape, read with torch.load(weights_only=True); a missing, corrupt, unsafe
    or too new file, or one without the parts in `require` (LAST_KEYS to resume), is a one-line CheckpointError."""
    import torch  # here, not at the top: this module imports without torch, like the rest of runs/

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing; train the run first (main.py / batch_train.py)")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e) or not _is_pickle(path):  # a PNG, a JSON file, ...
            raise CheckpointError(f"checkpoint {path} is corrupt or not a picollm checkpoint (UnpicklingError); "
                                  "delete it to retrain from scratch") from None
        raise CheckpointError(f"checkpoint {path} is not a plain weights file: it holds Python objects that could "
                              "run code when loaded, so it was not loaded, for safety; use a checkpoint picollm "
                              "wrote (delete this one to retrain from scratch)") from None
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a picollm checkpoint "
                              f"({e.__class__.__name__}); delete it to retrain from scratch") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no model weights; delete it to retrain from scratch")
    ckpt = upgrade(ckpt, path)
    check_parts(ckpt, path, require)
    return ckpt


def load_config(run_dir: Path | str) -> RunConfig:
    """The RunConfig a run was trained with (its config.json), its corpus file found where the run was moved
    (picollm.runs.portable); a damaged config.json is a one-line CheckpointError."""
    path = Path(run_dir) / "config.json"
    record = read_json(path)
    missing = [k for k in ("model", "corpus") if not isinstance(record.get(k), str)]
    if missing:
        raise CheckpointError(f"{path} has no {' or '.join(missing)} (not a config picollm wrote); {RETRAIN}")
    try:
        cfg = RunConfig.from_record(record)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError: a setting of the wrong type or range
        raise CheckpointError(f"{path} is corrupt ({' '.join(str(e).split())}); {RETRAIN}") from None
    return locate_corpus(Path(run_dir), cfg, record.get("fingerprint"))


def load_run(run_dir: Path | str, which: str = "best", device: str = "cpu"):
    """(config, tokenizer, model in eval mode, checkpoint dict) of a trained run."""
    from picollm.data.tokenizers import load_tokenizer  # here, not at the top: it imports torch

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; list runs with `ls checkpoints/`")
    cfg = load_config(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    path = checkpoint_path(run_dir, which)
    ckpt = load_checkpoint(path, map_location=device)
    model = build_model(cfg, tokenizer.vocab_size)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its config.json ({str(e).splitlines()[0]}); "
                              "retrain the run") from None
    return cfg, tokenizer, model.to(device).eval(), ckpt
