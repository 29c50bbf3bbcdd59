import hashlib
import os
import re
from pathlib import Path

import pytest
import torch

from picollm.core.errors import DataError
from picollm.data import corpora as data
from picollm.data.batching import batchify, num_segments, prepare_data, random_windows, stream_segment
from picollm.data.corpora import (
    CORPORA,
    corpus_identity,
    corpus_name,
    default_tokenizer,
    download,
    load_splits,
)

DATA = Path(os.environ["PICOLLM_DATA_DIR"])


def test_data_dir_is_there():
    assert (DATA / "ptb" / "ptb.train.txt").is_file(), "set PICOLLM_DATA_DIR to the shared corpora"


def test_tinyshakespeare_90_5_5_split_covers_text():
    splits = load_splits("tinyshakespeare")
    text = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    assert splits["train"] + splits["valid"] + splits["test"] == text
    assert len(splits["train"]) == int(0.9 * len(text))
    assert abs(len(splits["valid"]) - len(splits["test"])) <= 1


@pytest.mark.parametrize(
    "corpus, vocab, counts",
    [("ptb", 10_000, (929_589, 73_760, 82_430)), ("wikitext2", 33_278, (2_088_628, 217_646, 245_569))],
)
def test_word_corpora_vocab_and_token_counts(corpus, vocab, counts):
    tok, tensors = prepare_data(corpus, "word", None)
    assert default_tokenizer(corpus) == "word"
    assert tok.vocab_size == vocab
    # the train tensor is exactly the train file: nothing from valid/test leaks into training
    assert tuple(tensors[s].numel() for s in ("train", "valid", "test")) == counts
    assert all(t.dtype == torch.int64 and t.dim() == 1 for t in tensors.values())
    assert (tensors["valid"] != tok.unk_id).any()  # the valid words are in the train vocabulary
    assert prepare_data(corpus, "word", None)[1] is tensors  # memoised


def test_tinystories_splits():
    splits = load_splits("tinystories")
    sep = "\n<|endoftext|>\n"
    assert default_tokenizer("tinystories") == "bpe"
    raw_train = (DATA / "tinystories" / "TinyStories-train-head2MiB.txt").read_text(encoding="utf-8")
    assert splits["train"].split(sep) == [s.strip() for s in raw_train.split("<|endoftext|>")]
    valid_stories = splits["valid"].split(sep)
    test_stories = splits["test"].split(sep)
    assert abs(len(valid_stories) - len(test_stories)) <= 1
    assert "\n\n" not in splits["valid"] and "\n\n" not in splits["test"]
    raw_valid = (DATA / "tinystories" / "tinystories_validation_head.txt").read_text(encoding="utf-8")
    assert [s.strip() for s in re.split(r"\n[ \t]*\n", raw_valid) if s.strip()] == valid_stories + test_stories


def test_splits_are_disjoint_files():
    splits = load_splits("ptb")
    assert splits["valid"][:2000] not in splits["train"] and splits["test"][:2000] not in splits["train"]


def test_unknown_corpus():
    with pytest.raises(DataError) as e:
        default_tokenizer("shakespeare")
    msg = str(e.value)
    assert "\n" not in msg and all(name in msg for name in CORPORA) and ".txt" in msg


def test_local_text_file(tmp_path):
    path = tmp_path / "My notes-v2.txt"
    text = "hello world, this is a local corpus.\n" * 40
    path.write_text(text, encoding="utf-8")
    corpus = str(path)
    assert default_tokenizer(corpus) == "char"
    assert corpus_name(corpus) == "My_notes_v2"
    assert corpus_identity(corpus) == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(path.read_bytes())
    assert corpus_identity(str(copy)) == corpus_identity(corpus)  # content, not path
    tok, tensors = prepare_data(corpus, "char", None)
    assert sum(t.numel() for t in tensors.values()) == len(text)
    assert tok.decode(torch.cat(list(tensors.values()))) == text
    with pytest.raises(DataError):
        corpus_identity(str(tmp_path / "missing.txt"))


def test_download_checksum(tmp_path):
    src = tmp_path / "src.txt"
    src.write_bytes(b"some corpus bytes\n" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "sub" / "file.txt"
    with pytest.raises(DataError) as e:
        download(src.as_uri(), dest, "0" * 64)
    assert "\n" not in str(e.value) and "0" * 64 in str(e.value) and good in str(e.value)
    assert not (tmp_path / "cache").exists()  # no partial file, and not the folders made for it either
    assert download(src.as_uri(), dest, good) == dest
    assert dest.read_bytes() == src.read_bytes() and list(dest.parent.iterdir()) == [dest]


def test_missing_corpus_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("PICOLLM_DATA_DIR")
    monkeypatch.setenv("PICOLLM_CACHE_DIR", str(tmp_path / "cache"))
    spec = CORPORA["ptb"]
    unreachable = (tmp_path / "no" / "such" / "ptb.train.txt").as_uri()
    files = {role: data.CorpusFile(f.name, unreachable, f.sha256) for role, f in spec.files.items()}
    monkeypatch.setitem(CORPORA, "ptb", data.CorpusSpec(spec.name, spec.subdir, spec.level, files))
    with pytest.raises(DataError) as e:
        load_splits("ptb")
    msg = str(e.value)
    assert "\n" not in msg and "PICOLLM_DATA_DIR" in msg and unreachable in msg and "ptb.train.txt" in msg


def test_cache_dir_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("PICOLLM_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PICOLLM_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "cache" / "tinyshakespeare" / "input.txt").write_bytes((DATA / "tinyshakespeare" / "input.txt").read_bytes())
    assert load_splits("tinyshakespeare") == load_splits("tinyshakespeare")
    assert len(load_splits("tinyshakespeare")["test"]) > 0


def test_batchify_and_stream_segments_cover_each_target_once():
    data_ = torch.arange(1003)
    streams = batchify(data_, 4)
    assert streams.shape == (4, 250) and streams.is_contiguous()
    assert torch.equal(streams.flatten(), data_[:1000])
    seen = []
    for i in range(num_segments(streams, 32)):
        x, y = stream_segment(streams, i, 32)
        assert x.shape == y.shape and x.size(1) <= 32
        assert torch.equal(y, x + 1)  # y is x shifted by one (data is arange)
        seen.append(y)
    targets = torch.cat(seen, dim=1)
    assert torch.equal(targets, streams[:, 1:])  # every token but each stream's first is a target exactly once
    assert num_segments(streams, 32) == 8 and stream_segment(streams, 7, 32)[0].size(1) == 249 - 7 * 32
    with pytest.raises(IndexError):
        stream_segment(streams, 8, 32)
    with pytest.raises(DataError):
        batchify(torch.arange(5), 4)


def test_random_windows():
    data_ = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(data_, 8, 10, g)
    assert x.shape == y.shape == (8, 10) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y, x + 1)
    assert int(y.max()) <= 99
    x2, y2 = random_windows(data_, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # every start position is reachable, including the last one (window ending at the final token)
    x3, _ = random_windows(torch.arange(12), 200, 10, torch.Generator().manual_seed(1))
    assert set(x3[:, 0].tolist()) == {0, 1}


def test_split_too_short():
    with pytest.raises(DataError) as e:
        random_windows(torch.arange(10), 2, 10, torch.Generator().manual_seed(0))
    assert "\n" not in str(e.value) and "block_size" in str(e.value)
