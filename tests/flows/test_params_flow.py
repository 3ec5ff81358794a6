"""A flow names a bad parameter as its run form does (the core names it in its own words, as
``param``; the CLI would name the flag): the failure says which flow parameter to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from candleflow.errors import InvalidRequest
from flows.backfill import backfill
from flows.load_data import load_data
from flows.optimize import optimize


@pytest.mark.parametrize(
    ("flow", "params", "named"),
    [
        (load_data, {"source": "ib", "ib_time_scale": 0},
         "(load_data parameter ib_time_scale=0.0)"),
        (load_data, {"source": "ib", "ib_port": 70000}, "(load_data parameter ib_port=70000)"),
        (load_data, {"source": "files"}, "(give load_data parameter path)"),
        (load_data, {"source_options": {"unknown": "ZZZZ"}},
         "(load_data parameter source_options.unknown='ZZZZ')"),
        (backfill, {"universe": ["AAPL"], "source": "ib", "source_options": {"time_scale": 0}},
         "(backfill parameter source_options.time_scale=0)"),
        (backfill, {"universe": ["AAPL"], "source": "yahoo"},
         "(backfill parameter source='yahoo')"),
        (optimize, {"iterations": 0}, "(optimize parameter iterations=0)"),
    ],
)  # fmt: skip
def test_a_flow_names_its_parameter(
    flow: Any, params: dict[str, Any], named: str, tmp_path: Path
) -> None:
    args = () if "universe" in params else ("AAPL",)
    with pytest.raises(InvalidRequest) as info:
        flow(*args, store=str(tmp_path), **params)
    message = str(info.value)
    assert message.endswith(named), message
    assert "--" not in message, "a flow's failure names no CLI flag"
