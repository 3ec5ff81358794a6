"""Search spaces as text and mappings: parsing typed by the strategy's parameters, the default
spaces, writing a space back as text, and the messages for input that cannot be read."""

from __future__ import annotations

import pytest

from candleflow.backtest import STRATEGIES
from candleflow.errors import InvalidRequest
from candleflow.optimize.space import (
    DEFAULT_SPACES,
    Categorical,
    Integer,
    Real,
    default_space,
    parse_space,
    space_text,
)


@pytest.mark.parametrize(
    ("strategy", "text", "expected"),
    [
        ("sma_cross", "fast=5:50,slow=10:200", {"fast": Integer(5, 50), "slow": Integer(10, 200)}),
        ("sma_cross", " fast = 5:50:5 ", {"fast": Integer(5, 50, 5)}),
        ("sma_cross", "fast=7,long_only=true|false",
         {"fast": Categorical((7,)), "long_only": Categorical((True, False))}),
        ("bollinger_breakout", "window=10|20|30,k=1:2.5",
         {"window": Categorical((10, 20, 30)), "k": Real(1.0, 2.5)}),
    ],
)  # fmt: skip
def test_text_spaces(strategy: str, text: str, expected: dict[str, object]) -> None:
    assert parse_space(text, strategy) == expected


def test_mapping_spaces() -> None:
    space = {"fast": [5, 50], "slow": [10, 20, 30, 40], "long_only": [True]}
    assert parse_space(space, "sma_cross") == {
        "fast": Integer(5, 50),  # two numbers: a range
        "slow": Categorical((10, 20, 30, 40)),  # another length: choices
        "long_only": Categorical((True,)),
    }
    assert parse_space({"k": (0.5, 2.0)}, "bollinger_breakout") == {"k": Real(0.5, 2.0)}
    assert parse_space({"fast": Integer(2, 9, 7)}, "sma_cross") == {"fast": Integer(2, 9, 7)}


def test_no_space_is_the_strategy_default() -> None:
    default = {"fast": Integer(5, 50), "slow": Integer(10, 200)}
    assert parse_space(None, "sma_cross") == parse_space("  ", "sma_cross") == default
    assert default_space("sma_cross") == default
    assert default_space("rsi_reversion") == {
        "window": Integer(5, 30), "lower": Real(10.0, 40.0), "upper": Real(60.0, 90.0),
    }  # fmt: skip
    assert set(DEFAULT_SPACES) == set(STRATEGIES)


def test_space_text_is_the_text_syntax() -> None:
    dims = {"window": Integer(5, 60, 5), "k": Real(0.5, 2.0), "long_only": Categorical((True,))}
    text = space_text(dims)
    assert text == "window=5:60:5,k=0.5:2.0,long_only=True"
    assert parse_space(text, "bollinger_breakout") == dims
    for name, default in DEFAULT_SPACES.items():
        assert space_text(default_space(name)) == default


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("fast", ["malformed search dimension 'fast'", "name=spec"]),
        ("fast=", ["malformed search dimension"]),
        (",", ["is empty or not understood", "fast=5:50"]),
        ("speed=1:2", ["no parameter 'speed'", "fast, slow, long_only"]),
        ("fast=a:b", ["fast='a'", "not a valid int"]),
        ("fast=1:2:3:4", ["fast='1:2:3:4' is not understood"]),
        ("long_only=0:1", ["long_only='0:1' is not understood"]),
        ("fast=50:5", ["Integer(50, 5, step=1) is empty"]),
    ],
)
def test_unreadable_spaces_say_what_to_write(text: str, needles: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_space(text, "sma_cross")
    for needle in needles:
        assert needle in str(caught.value)


def test_a_float_range_takes_no_step() -> None:
    with pytest.raises(InvalidRequest, match="a float range takes no step"):
        parse_space("k=1.0:2.0:0.5", "bollinger_breakout")
