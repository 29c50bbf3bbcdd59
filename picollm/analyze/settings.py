"""The analysis's settings (decoding, influence) and their flags, in a module without torch.

The commands build their parsers from these dataclasses, so `--help` and a mistyped flag answer without
importing torch; generate.py and influence.py compute with them.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from picollm.core.settings import add_settings_args, setting, settings_from_args, validate_settings

METHODS = ("lissa", "cg", "fisher")  # inverse-Hessian-vector product solvers of the influence analysis


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = setting(200, "tokens to generate per prompt (fewer when the end-of-sequence token "
                                  "comes first)", bounds="[0, inf)")
    temperature: float = setting(1.0, "softmax temperature; 0 = greedy (argmax)", bounds="[0, inf)")
    top_k: int = setting(0, "sample only among the k most likely tokens (0 = off)", bounds="[0, inf)")
    top_p: float = setting(1.0, "nucleus: sample among the smallest set of tokens holding this much probability "
                           "(1 = off)", bounds="(0, 1]")
    repetition_penalty: float = setting(1.0, "CTRL penalty on already-generated tokens: positive logits / p, "
                                        "negative logits * p (1 = off)", bounds="(0, inf)")
    beam: int = setting(1, "beam width; > 1 = beam search (deterministic; temperature, top-k and top-p are "
                        "ignored)", bounds="[1, inf)")
    length_penalty: float = setting(1.0, "beam search ranks finished hypotheses by sum(log p) / length ** "
                                    "length_penalty")
    stop_at_eos: bool = setting(True, "stop a row at the tokenizer's end-of-sequence token")
    seed: int = setting(1337, "seed of the sampling generator", bounds="[0, 18446744073709551615]")

    def __post_init__(self) -> None:
        validate_settings(self)

    @property
    def strategy(self) -> str:
        """'beam', 'greedy' or 'sample'."""
        if self.beam > 1:
            return "beam"
        return "greedy" if self.temperature == 0 else "sample"

    def params(self) -> dict[str, Any]:
        """The settings that matter for this strategy (what the analysis tables record)."""
        keep = {"beam": ("max_new_tokens", "beam", "length_penalty", "repetition_penalty", "stop_at_eos"),
                "greedy": ("max_new_tokens", "repetition_penalty", "stop_at_eos"),
                "sample": ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
                           "stop_at_eos", "seed")}[self.strategy]
        return {k: v for k, v in asdict(self).items() if k in keep}


def add_max_new_tokens_arg(parser: argparse.ArgumentParser) -> None:
    """--max_new_tokens of the analysis commands, with the decoder's own default."""
    parser.add_argument("--max_new_tokens", type=int, default=DecodeConfig.max_new_tokens,
                        help=f"tokens generated per prompt and decoding strategy (default: {DecodeConfig.max_new_tokens})")


@dataclass(frozen=True)
class InfluenceSettings:
    """What analyze_influence computes; each field is also the flag --influence_<field> (see add_influence_args)."""

    n_train: int = setting(64, "training windows scored (and, by default, the Hessian sample)", bounds="[2, inf)",
                           flag="influence_n_train")
    n_test: int = setting(3, "test windows explained", bounds="[1, inf)", flag="influence_n_test")
    damping: float = setting(0.01, "damping: (H + LAMBDA I)^-1; raised automatically if H has stronger negative "
                             "curvature", bounds="[0, inf)", flag="influence_damping")
    method: str = setting("lissa", "inverse-Hessian-vector products: lissa, cg (conjugate gradients) or fisher "
                          "(diagonal empirical Fisher, cheapest)", choices=METHODS, flag="influence_method")
    lissa_steps: int = setting(100, "LiSSA iterations", bounds="[1, inf)", flag="influence_lissa_steps")
    cg_steps: int = setting(50, "conjugate-gradient iterations", bounds="[1, inf)", flag="influence_cg_steps")
    lanczos_steps: int = setting(20, "Lanczos steps for the top Hessian / Fisher eigenvalues", bounds="[1, inf)",
                                 flag="influence_lanczos_steps")
    n_eigs: int = setting(3, "top eigenvalues reported", bounds="[1, inf)", flag="influence_n_eigs")
    params: str = setting("all", "parameters differentiated: all, head (output projection only: cheaper for big "
                          "models) or comma-separated name prefixes, e.g. blocks.1,ln_f", flag="influence_params")
    n_hessian: int = setting(0, "training windows in the Hessian sample (0 = the scored ones)", bounds="[0, inf)",
                             flag="influence_n_hessian")
    top_k: int = setting(10, "most helpful and most harmful training windows listed per test window",
                         bounds="[1, inf)", flag="influence_top_k")
    dtype: str = setting("float32", "precision of the analysis", choices=("float32", "float64"),
                         flag="influence_dtype")
    seed: int = setting(0, "seed for the windows and Lanczos", bounds="[0, 4294967295]", flag="influence_seed")

    def __post_init__(self) -> None:
        validate_settings(self)


def add_influence_args(parser: argparse.ArgumentParser) -> None:
    """The --influence* flags; `influence_kwargs(args)` turns them into analyze_influence's keywords."""
    g = parser.add_argument_group("influence functions and Fisher information")
    g.add_argument("--influence", action="store_true",
                   help="also write fisher_layers.csv/.png, influence_top.csv and influence.json per run")
    add_settings_args(g, InfluenceSettings, exclude=("lissa_steps", "cg_steps", "n_eigs"))
    # one flag for both solvers' iteration counts, whose defaults differ
    g.add_argument("--influence_steps", type=int, default=None, metavar="N",
                   help="LiSSA / CG iterations (default: 100 for lissa, 50 for cg)")


def influence_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """analyze_influence keywords from the parsed --influence* flags (device is left to the caller)."""
    steps = {} if args.influence_steps is None else {"lissa_steps": args.influence_steps,
                                                     "cg_steps": args.influence_steps}
    return {**settings_from_args(args, InfluenceSettings), **steps}
