"""Search spaces and samplers: presets, the space-file format, dedupe, determinism, halving schedule."""

import json

import pytest

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.sweep.samplers import SAMPLERS, FixedSampler, sample
from picollm.sweep.samplers.halving import halving_schedule, rung_budget
from picollm.sweep.samplers.random import random_configs
from picollm.sweep.settings import BatchSettings
from picollm.sweep.space import PRESETS, PRESETS_DIR, Space, count_params, load_space


def fps(configs):
    return [c.fingerprint() for c in configs]


def test_every_preset_is_valid_and_samples_distinct_configs():
    for name in PRESETS:
        configs = sample(load_space(name), seed=0)
        assert configs, name
        assert len(set(fps(configs))) == len(configs), name


def test_preset_sizes_and_contents():
    grid = sample(load_space("xlstm-ptb-grid"))
    assert len(grid) == 27
    assert {(c.embed, c.hidden, c.lr) for c in grid} == {
        (e, h, lr) for e in (64, 128, 256) for h in (128, 256, 512) for lr in (0.001, 0.005, 0.01)}
    assert all(c.model == "xlstm" and c.corpus == "ptb" and c.block_size == 30 and c.epochs == 5 for c in grid)
    assert load_space("xlstm-ptb-grid").continue_best == 50

    reference = sample(load_space("lstm-wikitext2"))[0]
    assert (reference.layers, reference.embed, reference.hidden, reference.dropout, reference.batch_size,
            reference.block_size, reference.lr, reference.weight_decay, reference.grad_clip) == \
        (2, 100, 100, 0.5, 20, 30, 1e-3, 0.0, 0.25)
    assert reference.tie_weights and reference.corpus == "wikitext2"

    fast = sample(load_space("fast"))
    assert sorted(c.model for c in fast) == sorted(["kgram_mlp"] * 8 + ["lstm", "xlstm", "transformer"] * 4)
    assert len({c.fingerprint() for c in fast}) == len(fast)
    assert all(c.corpus == "tinyshakespeare" and c.max_steps <= 300 for c in fast)

    pico_space = load_space("pico")
    pico = sample(pico_space, seed=0)
    assert {c.model for c in pico} == set(pico_space.choices["model"])  # the families it pins: all drawn
    assert {c.k for c in pico if c.model == "kgram_mlp"} <= {1, 2, 3, 4, 5}
    assert {c.embed for c in pico} <= {32, 64, 128}
    assert {c.hidden for c in pico if c.model in ("lstm", "xlstm")} <= {64, 128}


def test_reproduction_presets_follow_their_papers():
    small, medium, large = (sample(load_space(f"ptb-zaremba-{size}"))[0] for size in ("small", "medium", "large"))
    for cfg, width, dropout, bptt in ((small, 200, 0.0, 20), (medium, 650, 0.5, 35), (large, 1500, 0.65, 35)):
        assert (cfg.model, cfg.layers, cfg.embed, cfg.hidden, cfg.dropout, cfg.block_size, cfg.batch_size) == \
            ("lstm", 2, width, width, dropout, bptt, 20)
        assert cfg.optimizer == "sgd" and cfg.schedule == "step" and not cfg.tie_weights and not cfg.norm
        assert cfg.lr == bptt  # the paper's lr 1 on a loss summed over the BPTT steps; ours is averaged
    assert (small.grad_clip * 20, medium.grad_clip * 35, large.grad_clip * 35) == pytest.approx((5, 5, 10))
    assert (small.epochs, medium.epochs, large.epochs) == (13, 39, 55)
    assert (small.decay_start_epoch, medium.decay_start_epoch, large.decay_start_epoch) == (4, 6, 14)

    char = sample(load_space("shakespeare-char"))[0]
    assert (char.tokenizer, char.layers, char.embed, char.hidden, char.block_size, char.batch_size, char.lr,
            char.epochs) == ("char", 1, 64, 128, 64, 32, 1e-3, 10)


def test_same_size_presets_match_the_paper_model_in_parameters():
    paper = count_params(sample(load_space("ptb-zaremba-small"))[0])
    ours = sample(load_space("ptb-small-picollm"))[0]
    assert abs(count_params(ours) / paper - 1) < 0.01
    xlstm, lstm = sample(load_space("ptb-xlstm-vs-lstm"))
    assert lstm.fingerprint() == ours.fingerprint()  # the same run serves both comparisons
    assert xlstm.model == "xlstm" and abs(count_params(xlstm) / count_params(lstm) - 1) < 0.01


def test_baselines_have_matched_parameter_counts():
    counts = {c.model: count_params(c) for c in sample(load_space("xlstm-vs-baselines"))}
    assert set(counts) == {"lstm", "xlstm", "transformer"}
    assert max(counts.values()) / min(counts.values()) < 1.10, counts


def test_count_params_matches_the_built_model():
    cfg = RunConfig(model="transformer", embed=32, layers=1, heads=2, positional="learned")
    expected = 65 * 32 + 64 * 32 + 12 * 32 * 32  # token + position embeddings (tied head) + one block's matrices
    assert expected <= count_params(cfg, vocab_size=65) <= expected + 20 * 32 + 65  # + biases and norm gains


def test_random_sampler_is_deterministic_per_seed():
    space = load_space("pico")
    a, b, c = (sample(space, "random", 12, seed) for seed in (3, 3, 4))
    assert fps(a) == fps(b)
    assert fps(a) != fps(c)


def test_random_never_repeats_a_fingerprint_even_when_most_draws_collide():
    # hidden does not matter to the transformer: 6 points, but 1 distinct transformer run and 3 kgram runs
    space = Space.from_dict({"base": {"max_steps": 10},
                             "choices": {"model": ["transformer", "kgram_mlp"], "hidden": [32, 64, 128]}}, "t")
    configs = random_configs(space, n_runs=50, seed=0)
    assert len(configs) == len(set(fps(configs))) == 4
    assert sum(c.model == "transformer" for c in configs) == 1

    big = load_space("pico")
    many = random_configs(big, n_runs=200, seed=1)
    assert len(many) == 200 and len(set(fps(many))) == 200


def test_grid_dedupes_settings_a_family_ignores():
    space = Space.from_dict({"choices": {"model": ["lstm"], "k": [1, 2, 3], "lr": [1e-3, 3e-3]}}, "t")
    assert len(sample(space)) == 2  # lstm ignores k


def test_family_choices_apply_only_to_their_family_and_replace_shared_lists():
    space = Space.from_dict({"choices": {"model": ["kgram_mlp", "lstm"], "hidden": [64]},
                             "family_choices": {"kgram_mlp": {"k": [2, 4]}, "lstm": {"hidden": [96, 160]}}}, "t")
    configs = sample(space)
    assert sorted((c.model, c.k, c.hidden) for c in configs if c.model == "kgram_mlp") == \
        [("kgram_mlp", 2, 64), ("kgram_mlp", 4, 64)]
    assert sorted(c.hidden for c in configs if c.model == "lstm") == [96, 160]


def test_family_base_fixes_settings_of_one_family_and_leaves_the_draws_alone():
    choices = {"model": ["kgram_mlp", "lstm", "xlstm"], "lr": [1e-3, 3e-3, 1e-2], "embed": [16, 32]}
    plain = Space.from_dict({"choices": choices}, "t")
    pinned = Space.from_dict({"choices": choices, "family_base": {"xlstm": {"batching": "stream", "lr": 5e-3}}}, "t")
    drawn, drawn_pinned = sample(plain, "random", n_runs=8), sample(pinned, "random", n_runs=8)
    assert [(c.model, c.embed) for c in drawn] == [(c.model, c.embed) for c in drawn_pinned]
    for before, after in zip(drawn, drawn_pinned, strict=True):
        if after.model == "xlstm":  # the family's base sits under the axes: the drawn lr wins
            assert after.resolved().batching == "stream" and after.lr == before.lr
        else:
            assert after == before
    assert {c.resolved().batching for c in drawn if c.model == "xlstm"} == {"random"}  # the recipe's
    assert load_space("pico").with_overrides({"batching": "random"}).family_base == {
        "xlstm": {"optimizer": "adamw", "schedule": "cosine"},  # the command line wins
        "transformer": {"canon": 0, "attn_gate": False, "value_embed": False, "embed_norm": False}}


def test_overrides_fix_a_field_for_every_config():
    space = load_space("xlstm-ptb-grid").with_overrides({"lr": 0.002})
    configs = sample(space)
    assert len(configs) == 9 and {c.lr for c in configs} == {0.002}


def test_invalid_combinations_are_skipped_but_an_all_invalid_space_is_an_error():
    ok = Space.from_dict({"choices": {"model": ["transformer"], "embed": [30, 32], "heads": [4]}}, "t")
    assert [c.embed for c in sample(ok)] == [32]
    bad = Space.from_dict({"choices": {"model": ["transformer"], "embed": [30, 34], "heads": [4]}}, "t")
    for sampler in ("grid", "random"):
        with pytest.raises(ConfigError, match="no valid config.*divisible") as err:
            sample(bad, sampler, n_runs=3)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("space,message", [
    ({"base": {"embedd": 64}}, "unknown config field"),
    ({"choices": {"embed": []}}, "empty"),
    ({"choices": {"embed": 64}}, "must be a list"),
    ({"choices": {"lr": ["fast"]}}, "not a float"),
    ({"choices": {"model": ["gpt5"]}}, "unknown model family"),
    ({"family_choices": {"rnn": {"hidden": [1]}}}, "unknown family"),
    ({"family_base": {"rnn": {"hidden": 1}}}, "unknown family"),
    ({"family_base": {"lstm": {"hidden": "big"}}}, "not a int"),
    ({"family_base": {"lstm": {"model": "xlstm"}}}, "cannot set the model"),
    ({"family_base": ["lstm"]}, "must map a family"),
    ({"sampler": "bayes"}, "sampler must be one of"),
    ({"n_runs": 0}, "n_runs"),
    ({"grid": {"embed": [1]}}, "unknown key"),
    ({"configs": [{"lr": 0.1}], "choices": {"lr": [0.2]}}, "both"),
    ({"base": {"out_dir": "x"}}, "command line"),
])
def test_invalid_spaces_are_one_line_errors(space, message):
    with pytest.raises(ConfigError, match=message) as err:
        Space.from_dict(space, "mine")
    assert "\n" not in str(err.value) and "mine" in str(err.value)


def test_unknown_preset_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*fast"):
        load_space("nope")


def test_space_files_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("base: {model: kgram_mlp, max_steps: 20}\n"
                         "choices:\n  lr: [1e-3, 3.0e-3]\n  k: [1, 2]\n"
                         "sampler: random\nn_runs: 3\n")
    space = load_space(path=yaml_file)
    assert space.name == "mine" and space.sampler == "random" and space.n_runs == 3
    configs = sample(space, seed=0)
    assert len(configs) == 3 and {c.lr for c in configs} <= {1e-3, 3e-3}  # YAML's "1e-3" string became a float

    json_file = tmp_path / "mine.json"
    json_file.write_text(json.dumps({"base": {"model": "kgram_mlp"}, "configs": [{"k": 1}, {"k": 2}]}))
    assert [c.k for c in sample(load_space(path=json_file))] == [1, 2]

    (tmp_path / "broken.yaml").write_text("base: {model: [\n")
    for path, message in [(tmp_path / "broken.yaml", "not valid YAML"), (tmp_path / "missing.yaml", "not found"),
                          (tmp_path / "mine.txt", "must end in")]:
        if path.suffix == ".txt":
            path.write_text("{}")
        with pytest.raises(ConfigError, match=message) as err:
            load_space(path=path)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="not both"):
        load_space("fast", yaml_file)


def test_halving_schedule_keeps_one_in_eta():
    rungs = halving_schedule(27, eta=3)
    assert [(r.n_in, r.n_keep) for r in rungs] == [(27, 9), (9, 3), (3, 1), (1, 0)]
    assert [r.fraction for r in rungs] == pytest.approx([1 / 27, 1 / 9, 1 / 3, 1])
    assert [(r.n_in, r.n_keep) for r in halving_schedule(10, eta=2)] == [(10, 5), (5, 2), (2, 1), (1, 0)]
    assert [(r.n_in, r.n_keep) for r in halving_schedule(1)] == [(1, 0)]
    with pytest.raises(ConfigError):
        halving_schedule(5, eta=1)


def test_rung_budgets_land_on_evaluation_points():
    assert rung_budget(1 / 9, 900, 50) == 100
    assert rung_budget(1 / 3, 100, 30) == 60  # 34 rounded up to the next evaluation
    assert rung_budget(1 / 27, 20, 100) == 20  # never past the run's own budget
    assert rung_budget(1.0, 123, 10) == 123


def test_presets_are_space_files_read_by_the_same_loader():
    assert list(PRESETS) == sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
    for name in PRESETS:
        assert load_space(name) == load_space(path=PRESETS_DIR / f"{name}.yaml")
    assert PRESETS["fast"]["sampler"] == "grid"


class FirstOnly(FixedSampler):
    """A sampler written for this test: the first point of the space."""

    @classmethod
    def draw(cls, space, n_runs, seed):
        return sample(space, "grid", 1)


def test_a_registered_sampler_is_a_choice_of_spaces_and_batches(monkeypatch):
    space = {"choices": {"model": ["kgram_mlp"], "k": [1, 2, 3]}}
    with pytest.raises(ConfigError, match="sampler must be one of"):
        Space.from_dict({**space, "sampler": "first"}, "t")
    monkeypatch.setitem(SAMPLERS, "first", FirstOnly)
    assert [c.k for c in sample(Space.from_dict({**space, "sampler": "first"}, "t"))] == [1]
    assert BatchSettings(sampler="first").sampler == "first"
    with pytest.raises(ConfigError, match="chooses configs as results come in"):
        sample(Space.from_dict(space, "t"), "tpe")
