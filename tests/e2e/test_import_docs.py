"""Every example of docs/importing.md runs (CONVENTIONS 12): each sample file imports, in full,
with the command under it, and the quoted notice for a range outside the file is what the CLI
prints."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from candleflow.sources.files import FileSource
from tests.e2e.conftest import one_line

DOC = Path(__file__).resolve().parents[2] / "docs" / "importing.md"
TEXT = DOC.read_text(encoding="utf-8")
#: name → text of each sample file ("`name.csv`:" above a csv block).
FILES = dict(re.findall(r"`([\w.]+)`:\n\n```csv\n(.*?)```", TEXT, flags=re.S))
COMMANDS = [
    line.strip()
    for block in re.findall(r"```sh\n(.*?)```", TEXT, flags=re.S)
    for line in block.splitlines()
    if line.strip().startswith(".venv/bin/candleflow")
]


def _options(command: str) -> dict[str, str]:
    args = shlex.split(command)
    return {a.lstrip("-"): b for a, b in itertools.pairwise(args) if a.startswith("--")}


def _write_samples(folder: Path) -> None:
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    index = pd.DatetimeIndex(["2024-01-02 09:30", "2024-01-02 10:30"], name="Datetime")
    pd.DataFrame(
        {"open": [187.15, 186.5], "high": [188.44, 187.0], "low": [186.1, 185.8],
         "close": [186.5, 186.2], "volume": [20000000, 9000000]}, index=index,
    ).to_parquet(folder / "AAPL.parquet")  # fmt: skip


def _rows(name: str) -> int:
    if name.endswith(".parquet"):
        return 2
    lines = [line for line in FILES[name].splitlines() if line.strip()]
    return len(lines) - (0 if re.match(r"\d{4}\.\d{2}\.\d{2},", lines[0]) else 1)


def test_the_doc_has_an_example_of_every_format() -> None:
    assert len(FILES) >= 9
    for heading in ("Yahoo", "Stooq", "Dukascopy", "MetaTrader", "Polygon", "Interactive Brokers",
                    "backtesting.py", "Parquet"):  # fmt: skip
        assert f"### {heading}" in TEXT
    paths = {_options(c)["path"] for c in COMMANDS}
    assert set(FILES) <= paths


@pytest.mark.parametrize("command", COMMANDS)
def test_each_sample_reads_whole(command: str, tmp_path: Path) -> None:
    _write_samples(tmp_path)
    opts = _options(command)
    source = FileSource(tmp_path / opts["path"], calendar_tz=opts.get("tz"))
    frame = source.read(shlex.split(command)[2], opts["timeframe"], opts.get("exchange", "XNYS"))
    assert len(frame) == _rows(opts["path"])


@pytest.mark.slow
def test_the_commands_import_every_sample(tmp_path: Path, cli_env: dict[str, str]) -> None:
    _write_samples(tmp_path)
    for command in COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "candleflow", *shlex.split(command)[1:], "-q"],
            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Traceback" not in result.stderr and "failed" not in result.stderr, command
        added = _rows(_options(command)["path"])
        assert re.search(rf"│\s+{added}\s+│", result.stdout), f"{command}: {result.stdout}"


@pytest.mark.slow
def test_the_quoted_notice_is_what_the_cli_prints(tmp_path: Path, cli_env: dict[str, str]) -> None:
    _write_samples(tmp_path)
    quoted = re.search(r"`(nothing to load for [^`]*)`", TEXT, flags=re.S)
    assert quoted is not None
    expected = " ".join(quoted.group(1).split())
    result = subprocess.run(
        [sys.executable, "-m", "candleflow", "load", "AAPL", "--source", "files", "--path",
         "aapl_yahoo.csv", "--timeframe", "1d", "--start", "1800-01-01", "--end", "1800-12-31",
         "--store", "data", "-q"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert one_line(result.stdout) == expected
