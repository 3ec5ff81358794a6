"""The CLI names a bad parameter by its flag (the core names it in its own words, as ``param``):
one line on stderr, exit code 2, before Prefect starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from candleflow.cli import main


@pytest.mark.parametrize(
    ("args", "core", "flag"),
    [
        (["--source", "ib", "--ib-port", "0"], "ib_port must be a TCP port", "(from --ib-port 0)"),
        (["--source", "ib", "--ib-time-scale", "0"], "time_scale must be a positive",
         "(from --ib-time-scale 0.0)"),
        (["--source", "ib", "--client-id", "-1"], "client_id must be >= 0",
         "(from --client-id -1)"),
        (["--source", "files"], "needs a path", "(give --path)"),
        (["--source", "synthetic", "--delay", "-1"], "delay must be a non-negative",
         "(from --delay -1.0)"),
        (["--source", "yahoo"], "unknown source 'yahoo'", "(from --source yahoo)"),
    ],
)  # fmt: skip
def test_load_names_the_flag_that_gave_the_bad_value(
    args: list[str], core: str, flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", "AAPL", "--store", str(tmp_path), *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and core in lines[0] and lines[0].endswith(flag)
    assert "load_data" not in lines[0]


def test_optimize_names_its_flags_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimize", "AAPL", "--store", str(tmp_path), "--batch-size", "0"]) == 2
    line = capsys.readouterr().err.strip()
    assert line == "error: batch_size=0: use ≥ 1 (from --batch-size 0)"
