"""The experiments' settings, in a module without torch: `picollm xlstm-study` builds its flags from them, so
its `--help` and a mistyped flag answer without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from picollm.core.settings import setting, validate_settings


@dataclass(frozen=True)
class LMExperiment:
    """The language-modelling experiment's settings (its defaults are a quick comparison, not the run defaults of RunConfig)."""

    corpus: str = setting("wikitext2", "corpus name or a path to a .txt file")
    max_steps: int = setting(300, "optimisation steps per family", bounds="[1, inf)")
    embed: int = setting(64, "token embedding size", bounds="[1, inf)")
    layers: int = setting(2, "xLSTM blocks (the others are matched to its size)", bounds="[1, inf)")
    heads: int = setting(4, "attention / memory heads", bounds="[1, inf)")
    block_size: int = setting(32, "tokens per training sequence", bounds="[1, inf)")
    batch_size: int = setting(16, "sequences per optimisation step", bounds="[1, inf)")
    lr: float = setting(3e-3, "peak learning rate", bounds="(0, inf)")
    test_tokens: int = setting(20000, "cap on scored test tokens (0 = all)", bounds="[0, inf)")
    eval_tokens: int = setting(4096, "validation tokens per evaluation (0 = the whole split)", bounds="[0, inf)")
    batching: str = setting("auto", "auto: LSTM and xLSTM (ours) on carried-state streams, the others on random "
                            "windows; random: every family on random windows", choices=("auto", "random"))
    seed: int = setting(1337, "random seed of every run", bounds="[0, 4294967295]")
    tokenizer: str = setting("auto", "tokenizer; auto = the corpus's own level", choices=("auto", "char", "word", "bpe"))

    def __post_init__(self) -> None:
        validate_settings(self)


@dataclass(frozen=True)
class NNExperiment:
    """The nearest-neighbour experiment's settings."""

    dim: int = setting(4, "dimension of the reference vectors", bounds="[1, inf)")
    classes: int = setting(4, "labels to choose from", bounds="[2, inf)")
    embed: int = setting(32, "model width", bounds="[1, inf)")
    layers: int = setting(2, "layers / blocks", bounds="[1, inf)")
    heads: int = setting(2, "attention / memory heads", bounds="[1, inf)")
    steps: int = setting(400, "training steps per model and length", bounds="[1, inf)")
    batch: int = setting(64, "sequences per step", bounds="[1, inf)")
    lr: float = setting(3e-3, "learning rate", bounds="(0, inf)")
    eval_size: int = setting(1024, "held-out queries scored", bounds="[1, inf)")
    seed: int = setting(0, "seed of the data and the models", bounds="[0, 4294967295]")

    def __post_init__(self) -> None:
        validate_settings(self)
