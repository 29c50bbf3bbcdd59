import argparse
import math
from dataclasses import dataclass

import pytest

from picollm.core.errors import ConfigError
from picollm.core.settings import add_settings_args, setting, settings_from_args, validate_settings


@dataclass(frozen=True)
class Example:
    rate: float = setting(0.5, "a rate", bounds="(0, 1]")
    count: int = setting(3, "a count", bounds="[1, inf)")
    margin: float = setting(0.0, "any finite number")
    mode: str = setting("a", "a mode", choices=("a", "b"))
    on: bool = setting(True, "a switch")
    seed: int = setting(7, "a seed", bounds="[0, 100]", flag="example_seed")

    def __post_init__(self) -> None:
        validate_settings(self)


@pytest.mark.parametrize("changes,message", [
    ({"rate": 0.0}, "--rate must be in (0, 1]; got 0.0"),
    ({"rate": math.nan}, "--rate must be in (0, 1]; got nan"),
    ({"margin": math.inf}, "--margin must be a finite number; got inf"),
    ({"count": 0}, "--count must be a positive integer; got 0"),
    ({"count": 2.5}, "--count must be a positive integer; got 2.5"),
    ({"count": True}, "--count must be a positive integer; got True"),
    ({"mode": "c"}, "--mode must be one of a, b; got 'c'"),
    ({"seed": 101}, "--example_seed must be in [0, 100]; got 101"),
])
def test_every_field_is_checked_and_the_error_names_its_flag(changes, message):
    with pytest.raises(ConfigError) as err:
        Example(**changes)
    assert str(err.value) == message


def test_flags_carry_the_defaults_and_only_typed_values_override():
    parser = argparse.ArgumentParser()
    add_settings_args(parser, Example, override=True)
    args = parser.parse_args(["--rate", "0.25", "--no-on", "--example_seed", "3"])
    assert settings_from_args(args, Example) == {"rate": 0.25, "on": False, "seed": 3}
    assert "(default: 0.5)" in parser.format_help()
    parser = argparse.ArgumentParser()
    add_settings_args(parser, Example)
    assert Example(**settings_from_args(parser.parse_args([]), Example)) == Example()
