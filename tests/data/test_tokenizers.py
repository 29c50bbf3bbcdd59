import json
import random

import pytest
import torch

from picollm.core.errors import CheckpointError, DataError
from picollm.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


@pytest.fixture(scope="module")
def bpe():
    text = "<|endoftext|>".join(["Once upon a time, a cat sat.\nThe dog ran fast!\n\n", "Héllo wörld ✓ 123\n"] * 50)
    return build_tokenizer("bpe", text, 300)


def test_char_round_trip_and_unknown():
    tok = build_tokenizer("char", TEXT)
    assert isinstance(tok, CharTokenizer) and tok.kind == "char"
    assert tok.vocab_size == len(set(TEXT)) + 1 and tok.eos_id is None
    assert tok.decode(tok.encode(TEXT)) == TEXT
    ids = tok.encode_tensor(TEXT)
    assert ids.dtype == torch.int64 and ids.dim() == 1 and ids.tolist() == tok.encode(TEXT)
    assert tok.token_strings()[tok.encode("\n")[0]] == "\\n"
    # unseen characters (including ones beyond the largest known code point) map to the unknown symbol
    assert tok.encode("Fq€") == [tok.encode("F")[0], tok.unk_id, tok.unk_id]
    assert tok.decode(tok.encode("q")) == "\ufffd" and tok.unk_id == tok.vocab_size - 1


def test_word_round_trip_unknown_and_order():
    text = "the cat sat\n\nthe dog\n"
    tok = build_tokenizer("word", text)
    assert isinstance(tok, WordTokenizer)
    assert tok.encode(text) == tok.encode_tensor(text).tolist()
    assert len(tok.encode(text)) == 3 + 1 + 1 + 2 + 1  # blank line -> just <eos>
    assert tok.decode(tok.encode(text)) == text
    assert tok.token_strings()[:2] == ["<eos>", "the"]  # frequency desc (3, 2), then by string
    assert tok.encode("the bird")[1] == tok.unk_id
    assert tok.itos[tok.eos_id] == "<eos>"


def test_bpe_round_trip_eos_and_chunking(bpe):
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 300 and bpe.unk_id is None
    s = "Once upon a time, a néw ✓ cat 🐱 sat.\n\n  \nThe end.<|endoftext|>Next\n"
    assert bpe.decode(bpe.encode(s)) == s
    assert bpe.encode("<|endoftext|>") == [bpe.eos_id]
    assert len(bpe.token_strings()) == bpe.vocab_size
    # encode_tensor encodes line pieces in parallel: it must give the ids of encoding the whole text
    rng = random.Random(0)
    alphabet = ["a", "b", " ", "\n", "\n\n", "\t", "!", "é", "1", "<|endoftext|>", "'s", " \n"]
    for _ in range(50):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert bpe.encode_tensor(s).tolist() == bpe.hf.encode(s).ids, repr(s)


def test_bpe_training_is_deterministic():
    text = "".join(f"story {i % 7} about a {['cat', 'dog', 'bird'][i % 3]} and a hat.\n" for i in range(300))
    a, b = build_tokenizer("bpe", text, 280), build_tokenizer("bpe", text, 280)
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_round_trip(tmp_path, kind, bpe):
    tok = bpe if kind == "bpe" else build_tokenizer(kind, TEXT)
    path = tmp_path / "run" / "tokenizer.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temp file left
    json.loads(path.read_text())
    back = load_tokenizer(path)
    assert type(back) is type(tok) and back.to_dict() == tok.to_dict()
    assert back.encode(TEXT) == tok.encode(TEXT) and back.eos_id == tok.eos_id and back.unk_id == tok.unk_id


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_tokenizer(tmp_path / "nope.json")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.json"
    for content in ["{not json", '{"type": "zzz"}', '{"type": "bpe", "tokenizer": "garbage"}', '{"type": "word"}']:
        bad.write_text(content)
        with pytest.raises(CheckpointError) as e:
            load_tokenizer(bad)
        assert "\n" not in str(e.value)


def test_unknown_kind():
    with pytest.raises(DataError):
        build_tokenizer("sentencepiece", TEXT)
