import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

# tests read the real corpora from the shared data directory unless the caller points elsewhere
os.environ.setdefault("PICOLLM_DATA_DIR", str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))

# The test models are tiny: a second intra-op thread buys nothing, and when the other core is busy
# (a worker subprocess, a parallel job) OpenMP's spinning threads make each op up to 50x slower.
torch.set_num_threads(1)


def toy_sentences(n: int, seed: int = 0) -> list[str]:
    """n short sentences from a tiny grammar: text with structure a small model learns in a few dozen steps."""
    import random

    rng = random.Random(seed)
    nouns = ["the cat", "a dog", "my bird", "one fish"]
    verbs = ["sat on", "ran to", "looked at", "jumped over"]
    return [f"{rng.choice(nouns)} {rng.choice(verbs)} {rng.choice(nouns)}." for _ in range(n)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """Path of a small local text file (1,500 toy sentences) to train on quickly."""
    path = tmp_path_factory.mktemp("corpus") / "toy.txt"
    path.write_text("\n".join(toy_sentences(1500)) + "\n")
    return str(path)


# --------------------------------------------------------------------------------------------------
# a real browser (the report's and the playground's tests)
# --------------------------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def assert_no_errors(driver) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


# --------------------------------------------------------------------------------------------------
# model families: a test over "every family" reads the registry, so a new family is tested with the others
# --------------------------------------------------------------------------------------------------
@functools.cache
def missing_extra(family: str) -> str | None:
    """Why `family` cannot be built here (the install hint of its missing optional extra), else None. Only a
    family the commands do not train by default (default=False in the registry) may need an extra."""
    from picollm.config import RunConfig
    from picollm.core.errors import ConfigError
    from picollm.models import FAMILIES, build_model

    if FAMILIES[family].default:
        return None
    try:
        build_model(RunConfig(model=family), vocab_size=2)
    except ConfigError as err:
        return str(err)
    return None


def tiny_transformer(corpus, tmp_path, **overrides):
    """A one-layer transformer run config that trains 20 steps in a second or two (a RunConfig)."""
    from picollm.config import RunConfig

    settings = dict(corpus=corpus, model="transformer", embed=16, hidden=32, layers=1, heads=2, block_size=16,
                    batch_size=8, max_steps=20, eval_interval=10, eval_tokens=1024, warmup_steps=2,
                    out_dir=str(tmp_path), progress=False)
    return RunConfig(**{**settings, **overrides})


def family_params(families=None) -> list:
    """pytest params for `families` (default: every registered family); a family whose optional extra is
    missing is skipped, with the install hint as the reason."""
    from picollm.models import FAMILIES

    return [pytest.param(name, id=name, marks=pytest.mark.skipif(missing_extra(name) is not None,
                                                                 reason=missing_extra(name) or ""))
            for name in (FAMILIES if families is None else families)]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, where the test can mount one (root on Linux)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
