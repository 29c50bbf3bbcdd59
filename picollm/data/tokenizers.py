"""Tokenizers: character, word (PTB / WikiText convention) and byte-level BPE.

Every tokenizer is built from the training split only, serialises to a small JSON file saved with the
run (so a run can be decoded and resumed without the corpus), and encodes whole splits into 1-D int64
tensors quickly.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from picollm.core.atomic import atomic_write_text
from picollm.core.errors import CheckpointError, DataError
from picollm.data.corpora import EOS_BPE, EOS_WORD, UNK_CHAR, UNK_WORD


def _printable(s: str) -> str:
    """Escape control characters (newline, tab, ...) so a token can be shown inline."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def _as_list(ids: Sequence[int] | Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]


class Tokenizer:
    """Common interface; subclasses define kind, vocab_size, encode, decode, token_strings, to_dict."""

    kind: str = ""
    eos_id: int | None = None
    unk_id: int | None = None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.encode_tensor(text).tolist()

    def encode_tensor(self, text: str) -> Tensor:
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        raise NotImplementedError

    def unknown_pieces(self, text: str) -> list[str]:
        """The distinct pieces of text (characters, words) that encode as the unknown token; none for BPE,
        which encodes any text losslessly."""
        return []

    def token_strings(self) -> list[str]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer JSON atomically, like every other file of a run."""
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------------
class CharTokenizer(Tokenizer):
    """One id per character seen in training, plus U+FFFD (the last id) for every unseen character."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        # U+FFFD in the training text is simply the unknown symbol, so it is never a second entry
        self.chars = sorted(set(chars) - {UNK_CHAR})
        if any(len(c) != 1 for c in self.chars):
            raise CheckpointError("char tokenizer vocabulary holds multi-character entries; rebuild the tokenizer")
        self.unk_id = len(self.chars)
        self.eos_id = None
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        # sorted code points: encode_tensor maps a whole text with one searchsorted instead of a dict per char
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(list(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode_tensor(self, text: str) -> Tensor:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if len(self._codes) == 0:
            return torch.full((len(codes),), self.unk_id, dtype=torch.long)
        idx = np.searchsorted(self._codes, codes)
        found = self._codes[np.minimum(idx, len(self._codes) - 1)] == codes
        ids = np.where(found, idx, self.unk_id).astype(np.int64)
        return torch.from_numpy(ids)

    def unknown_pieces(self, text: str) -> list[str]:
        return [c for c in dict.fromkeys(text) if c not in self.stoi and c != UNK_CHAR]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        table = self.chars + [UNK_CHAR]
        return "".join(table[i] for i in _as_list(ids))

    def token_strings(self) -> list[str]:
        return [_printable(c) for c in self.chars] + [UNK_CHAR]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": "".join(self.chars)}


# ---------------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    """The PTB / WikiText rule: every line is line.split() + ['<eos>'] (a blank line is just '<eos>')."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start an empty one
    out: list[str] = []
    for line in lines:
        out.extend(line.split())
        out.append(EOS_WORD)
    return out


class WordTokenizer(Tokenizer):
    """Whitespace-separated words; '<eos>' ends every line, '<unk>' stands for words unseen in training."""

    kind = "word"

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos) or EOS_WORD not in self.stoi or UNK_WORD not in self.stoi:
            raise CheckpointError("word tokenizer vocabulary has duplicates or lacks <eos>/<unk>; rebuild the tokenizer")
        self.eos_id = self.stoi[EOS_WORD]
        self.unk_id = self.stoi[UNK_WORD]

    @classmethod
    def from_text(cls, text: str) -> WordTokenizer:
        counts = Counter(_words(text))
        counts[EOS_WORD] += 0  # make sure both specials exist (count 0 sorts them last if unseen)
        counts[UNK_WORD] += 0
        # frequency descending, then the string: the same text always gives the same ids
        itos = sorted(counts, key=lambda w: (-counts[w], w))
        return cls(itos)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode_tensor(self, text: str) -> Tensor:
        get, unk = self.stoi.get, self.unk_id
        ids = np.fromiter((get(w, unk) for w in _words(text)), dtype=np.int64)
        return torch.from_numpy(ids)

    def unknown_pieces(self, text: str) -> list[str]:
        return [w for w in dict.fromkeys(_words(text)) if w not in self.stoi]

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        out, line = [], []
        for i in _as_list(ids):
            if i == self.eos_id:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(self.itos[i])
        out.append(" ".join(line))
        return "".join(out)

    def token_strings(self) -> list[str]:
        return [_printable(w) for w in self.itos]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "itos": self.itos}


# ---------------------------------------------------------------------------------------------------
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte map used by the ByteLevel pre-tokenizer."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


# split points after a lone newline between two non-spaces: no ByteLevel pre-token spans them and the
# newline is its own pre-token either way, so encoding the pieces separately (and in parallel) gives
# exactly the ids of the whole text (a run of newlines at a piece's end would become one pre-token)
_SAFE_SPLIT = re.compile(r"(?<=\S\n)(?=\S)")


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) trained with the HuggingFace `tokenizers` library; lossless."""

    kind = "bpe"

    def __init__(self, hf_tokenizer: Any):
        self.hf = hf_tokenizer
        self.eos_id = self.hf.token_to_id(EOS_BPE)
        self.unk_id = None  # byte-level: every string is representable, nothing is unknown

    @classmethod
    def from_text(cls, text: str, vocab_size: int = 2048) -> BPETokenizer:
        # the BPE library is loaded only for a BPE tokenizer: char and word runs never import it
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        min_size = 256 + 1  # every byte plus <|endoftext|>
        if vocab_size < min_size:
            raise DataError(f"--bpe_vocab_size must be at least {min_size} (256 bytes + <|endoftext|>); got {vocab_size}")
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_BPE],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in train or not
            show_progress=False,
        )
        # train on the documents between separators so no merge ever learns pieces of "<|endoftext|>";
        # the trainer counts words, so how the text is chunked does not change the merges
        docs = (d for part in text.split(EOS_BPE) for d in _SAFE_SPLIT.split(part) if d)
        hf.train_from_iterator(docs, trainer=trainer)
        return cls(hf)

    @classmethod
    def from_str(cls, s: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer  # only for a BPE tokenizer, as in from_text

        return cls(HFTokenizer.from_str(s))

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode_tensor(self, text: str) -> Tensor:
        pieces = _SAFE_SPLIT.split(text)
        encs = self.hf.encode_batch(pieces, add_special_tokens=False) if len(pieces) > 1 else [self.hf.encode(text)]
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
        return torch.from_numpy(ids)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        return self.hf.decode(_as_list(ids), skip_special_tokens=False)

    def token_strings(self) -> list[str]:
        table = _byte_decoder()
        out = []
        for i in range(self.vocab_size):
            tok = self.hf.id_to_token(i)
            if i == self.eos_id or tok is None or any(c not in table for c in tok):
                out.append(_printable(tok or ""))
            else:  # a token may be part of a multi-byte character: show the raw bytes then
                out.append(_printable(bytes(table[c] for c in tok).decode("utf-8", errors="backslashreplace")))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bpe", "tokenizer": self.hf.to_str()}


# ---------------------------------------------------------------------------------------------------
TOKENIZER_KINDS = ("char", "word", "bpe")


def build_tokenizer(kind: str, train_text: str, bpe_vocab_size: int = 2048) -> Tokenizer:
    """Build a tokenizer of the given kind from the training split's text."""
    if kind == "char":
        return CharTokenizer.from_text(train_text)
    if kind == "word":
        return WordTokenizer.from_text(train_text)
    if kind == "bpe":
        return BPETokenizer.from_text(train_text, bpe_vocab_size)
    raise DataError(f"unknown tokenizer {kind!r}; use one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Inverse of Tokenizer.to_dict()."""
    kind = d.get("type")
    if kind == "char":
        return CharTokenizer(list(d["chars"]))
    if kind == "word":
        return WordTokenizer(d["itos"])
    if kind == "bpe":
        return BPETokenizer.from_str(d["tokenizer"])
    raise CheckpointError(f"tokenizer type {kind!r} is not one of {', '.join(TOKENIZER_KINDS)}; rebuild the tokenizer")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer saved with Tokenizer.save(); a missing or corrupt file raises CheckpointError."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return tokenizer_from_dict(d)
    except FileNotFoundError:
        raise CheckpointError(f"tokenizer file {path} not found; the run directory is incomplete, retrain it") from None
    except CheckpointError as e:  # an unknown tokenizer type
        raise CheckpointError(f"tokenizer file {path} is corrupt ({str(e).split(';')[0]}); delete the run and retrain") from None
    except Exception as e:  # bad JSON, missing keys, a tokenizers-library parse error
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(f"tokenizer file {path} is corrupt ({type(e).__name__}: {reason}); delete the run and retrain") from None
