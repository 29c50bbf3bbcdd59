"""The xLSTM study code at toy scale: the nearest-neighbour task's labels, matched-size search, and the LM
study end to end on a tiny local corpus."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.experiments.nearest_neighbour import VectorSequenceModel, make_batch, run_nn_experiment
from picollm.experiments.xlstm_vs_baselines import count_params, match_sizes, run_lm_experiment

BASELINES = ("lstm", "xlstm", "transformer")  # xlstm_lib needs the optional extra


def test_nn_labels_are_the_nearest_reference_by_brute_force():
    dim, classes, refs = 3, 5, 7
    inputs, target = make_batch(50, refs, dim, classes, torch.Generator().manual_seed(0))
    assert inputs.shape == (50, refs + 1, dim + classes + 1) and target.shape == (50,)
    for b in range(50):
        x, q = inputs[b, :refs, :dim], inputs[b, refs, :dim]
        labels = inputs[b, :refs, dim:dim + classes].argmax(-1)
        best = min(range(refs), key=lambda j: sum((x[j, d] - q[d]).item() ** 2 for d in range(dim)))
        assert target[b].item() == labels[best].item()
        assert inputs[b, refs, dim:dim + classes].abs().sum() == 0 and inputs[b, refs, -1] == 1  # the query row
        assert (inputs[b, :refs, -1] == 0).all()


@pytest.mark.parametrize("family", BASELINES)
def test_vector_models_read_the_last_position(family):
    model = VectorSequenceModel(family, in_dim=10, classes=4, embed=16, layers=1, heads=2, seq_len=9)
    logits = model(torch.randn(3, 9, 10))
    assert logits.shape == (3, 4)
    assert 0 < model.num_params() < sum(p.numel() for p in model.parameters())  # unused LM embedding left out


def test_matched_sizes_are_within_tolerance():
    base = RunConfig(corpus="tinyshakespeare", embed=32, layers=2, heads=2, block_size=16)
    # word-level vocabularies: the shared embedding is most of every model, as in the WikiText-2 study
    sizes = match_sizes(base, vocab_size=3000, families=BASELINES)
    target = count_params(base.replace(model="xlstm", hidden=32), 3000)[0]
    assert sizes["xlstm"]["params"] == target
    for family in BASELINES:
        assert abs(sizes[family]["params"] - target) <= 0.10 * target, (family, sizes[family])


def test_lm_study_runs_end_to_end(tmp_path):
    corpus = tmp_path / "tiny.txt"
    g = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(1500)]  # ~1500 word types, Zipf-like counts: all three frequency buckets
    ids = (torch.rand(30000, generator=g) ** 4 * len(words)).long()
    corpus.write_text(" ".join(words[i] for i in ids.tolist()))
    df = run_lm_experiment(tmp_path / "out", corpus=str(corpus), max_steps=4, embed=16, layers=1, heads=2,
                      block_size=8, batch_size=4, test_tokens=200, eval_tokens=64, families=BASELINES,
                      tokenizer="word")
    assert list(df["family"]) == list(BASELINES)
    for name in ["lm_results.csv", "lm_results.md", "lm_buckets.png"]:
        assert (tmp_path / "out" / name).stat().st_size > 0
    table = pd.read_csv(tmp_path / "out" / "lm_results.csv")
    assert (table["test_ppl"] > 1).all() and (table["test_tokens"] > 0).all()
    assert "| LSTM |" in (tmp_path / "out" / "lm_results.md").read_text()


def test_lm_study_random_batching_overrides_the_streams_of_a_recurrent_family(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(" ".join(f"w{i % 97}" for i in range(4000)))
    kwargs = dict(corpus=str(corpus), max_steps=2, embed=16, layers=1, heads=2, block_size=8, batch_size=4,
                  test_tokens=100, eval_tokens=64, families=("lstm",), tokenizer="word")
    streams = run_lm_experiment(tmp_path / "auto", **kwargs)
    windows = run_lm_experiment(tmp_path / "random", batching="random", **kwargs)
    assert "batching" not in streams["settings"].iloc[0]
    assert "batching=random" in windows["settings"].iloc[0]
    assert streams["run"].iloc[0] != windows["run"].iloc[0]  # a different config, so a different run
    with pytest.raises(ConfigError, match="batching"):
        run_lm_experiment(tmp_path / "bad", batching="streams", **kwargs)


def test_nn_study_writes_its_table(tmp_path):
    df = run_nn_experiment(tmp_path, lengths=(2, 3), families=("lstm", "xlstm"), embed=8, layers=1, heads=2, steps=2,
                      batch=8, eval_size=16)
    assert len(df) == 4 and df["accuracy"].between(0, 1).all()
    assert (tmp_path / "nn_results.md").exists() and (tmp_path / "nn_accuracy.png").exists()
