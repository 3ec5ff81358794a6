"""Usage errors from the option parser exit 2 with a message, never a traceback."""

from __future__ import annotations

import pytest

from candleflow.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "AAPL", "--seed", "abc"], "Invalid value for '--seed'"),
        (["load", "AAPL", "--bogus"], "No such option: --bogus"),
        (["no-such-command"], "No such command"),
        (["load"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "load" in capsys.readouterr().out
