"""Typed source options: each record parses its raw options once, rejects a bad value with the
parameter (in the core's words) and the value as fields, and ``make_source`` builds from it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from candleflow.errors import InvalidBars, InvalidRequest, params_named
from candleflow.sources.files import FileSource
from candleflow.sources.options import (
    FilesOptions,
    IBOptions,
    SyntheticOptions,
    parse_source_options,
)
from candleflow.sources.registry import make_source
from candleflow.sources.synthetic import SyntheticSource


def test_each_source_parses_into_its_own_frozen_record(tmp_path: Path) -> None:
    synthetic = parse_source_options(" Synthetic ", seed=3, delay=1, unknown=["zzzz"])
    assert synthetic == SyntheticOptions(seed=3, delay=1.0, unknown=("ZZZZ",))
    files = parse_source_options("files", path=tmp_path, calendar_tz="Europe/Berlin")
    assert files == FilesOptions(str(tmp_path), "Europe/Berlin")
    ib = parse_source_options("ib", ib_host=" gw ", ib_port="7497", client_id=2, time_scale=0.5)
    assert ib == IBOptions(ib_host="gw", ib_port=7497, client_id=2, time_scale=0.5)
    for record in (synthetic, files, ib):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, dataclasses.fields(record)[0].name, None)
        assert not hasattr(record, "__dict__")  # slots


def test_options_of_other_sources_are_ignored_when_unset_or_at_their_default() -> None:
    neutral = dict(path=None, seed=0, delay=0.0, ib_host="127.0.0.1", ib_port=4002, client_id=1,
                   time_scale=1.0, calendar_tz=None)  # fmt: skip
    assert parse_source_options("synthetic", **neutral) == SyntheticOptions()
    assert parse_source_options("ib", **neutral) == IBOptions()


@pytest.mark.parametrize(
    ("source", "raw", "param", "value", "needle"),
    [
        ("yahoo", {}, "source", "yahoo", "use one of synthetic, files, ib"),
        ("synthetic", {"bogus": 1}, "bogus", 1, "unknown option 'bogus' for source 'synthetic'"),
        ("synthetic", {"ib_port": 7497}, "ib_port", 7497, "ib_port=7497 does not apply"),
        ("synthetic", {"seed": "x"}, "seed", "x", "seed must be an integer"),
        ("synthetic", {"seed": True}, "seed", True, "seed must be an integer"),
        ("synthetic", {"delay": -1}, "delay", -1, "delay must be a non-negative number"),
        ("synthetic", {"delay": math.inf}, "delay", math.inf, "non-negative number"),
        ("synthetic", {"unknown": "ZZZZ"}, "unknown", "ZZZZ", "must be a list of symbols"),
        ("synthetic", {"symbols": ["../x"]}, "symbols", ["../x"], "invalid symbol"),
        ("synthetic", {"fail": 3}, "fail", 3, "must be a function"),
        ("files", {}, "path", None, "needs a path"),
        ("files", {"path": "/no/such/dir"}, "path", "/no/such/dir", "no such file or directory"),
        ("ib", {"ib_port": 0}, "ib_port", 0, "TCP port 1-65535, got 0"),
        ("ib", {"ib_port": "x"}, "ib_port", "x", "ib_port must be an integer"),
        ("ib", {"client_id": -1}, "client_id", -1, "client_id must be >= 0"),
        ("ib", {"time_scale": 0}, "time_scale", 0, "time_scale must be a positive number"),
        ("ib", {"ib_host": " "}, "ib_host", " ", "ib_host is empty"),
        ("ib", {"timeout": 0}, "timeout", 0, "timeout must be a positive number of seconds"),
        ("ib", {"seed": 3}, "seed", 3, "does not apply to source 'ib'"),
    ],
)
def test_a_bad_option_is_rejected_naming_the_parameter_and_the_value(
    source: str, raw: dict[str, object], param: str, value: object, needle: str
) -> None:
    with pytest.raises(InvalidRequest, match=needle) as info:
        parse_source_options(source, **raw)
    assert (info.value.param, info.value.value) == (param, value)
    assert "--" not in str(info.value), "the core names no CLI flag"


def test_a_bad_time_zone_names_calendar_tz(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown time zone 'Mars/Olympus'") as info:
        parse_source_options("files", path=tmp_path, calendar_tz="Mars/Olympus")
    assert info.value.param == "calendar_tz"
    with pytest.raises(InvalidRequest) as direct:  # the source's constructor, the same check
        FileSource(tmp_path, calendar_tz="Mars/Olympus")
    assert direct.value.param == "calendar_tz"


def test_make_source_builds_from_the_record_and_a_name_is_parsed_first(tmp_path: Path) -> None:
    source = make_source(SyntheticOptions(seed=4, unknown=("ZZZZ",)))
    assert isinstance(source, SyntheticSource) and source.seed == 4
    assert make_source("synthetic", seed=4).seed == 4  # type: ignore[attr-defined]
    overridden = make_source(SyntheticOptions(seed=4), seed=5)  # raw options override the record
    assert overridden.seed == 5  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest) as info:
        make_source(SyntheticOptions(), delay=-2)
    assert (info.value.param, info.value.value) == ("delay", -2)
    (tmp_path / "AAPL.csv").write_text("timestamp,open,high,low,close,volume\n")
    assert isinstance(make_source(FilesOptions(str(tmp_path))), FileSource)


def test_invalid_request_keeps_its_message_api_and_gains_param_and_value() -> None:
    plain = InvalidRequest("bad dates")
    assert str(plain) == "bad dates" and (plain.param, plain.value) == (None, None)
    assert isinstance(plain, ValueError)
    named = InvalidRequest("ib_port must be a TCP port 1-65535, got 0", param="ib_port", value=0)
    assert named.args == ("ib_port must be a TCP port 1-65535, got 0",)
    bars = InvalidBars("3 rows fail", bad_rows=3, total=9)
    assert (bars.param, bars.bad_rows) == (None, 3)


def test_each_face_names_the_parameter_in_its_own_words() -> None:
    error = InvalidRequest("ib_port must be a TCP port 1-65535, got 0", "ib_port", 0)
    flags = {"ib_port": "--ib-port", "path": "--path"}
    assert error.naming(flags, "from {name} {value}", "give {name}").endswith("(from --ib-port 0)")
    missing = InvalidRequest("source 'files' needs a path", "path")
    assert missing.naming(flags, "from {name} {value}", "give {name}").endswith("(give --path)")
    assert InvalidRequest("x", "seed", 3).naming(flags, "{name}", "{name}") == "x"  # no flag

    with pytest.raises(InvalidRequest) as info, params_named({"time_scale": "ib_time_scale"},
                                                             "load_data parameter"):  # fmt: skip
        parse_source_options("ib", time_scale=0)
    assert str(info.value).endswith("(load_data parameter ib_time_scale=0)")
    assert info.value.param is None  # in the face's words already
    assert isinstance(info.value.__cause__, InvalidRequest)
    with pytest.raises(InvalidRequest, match=r"bad dates$"), params_named({}, "p"):
        raise InvalidRequest("bad dates")
