"""Every command in the README's usage section runs and succeeds (CONVENTIONS 12)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _usage_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    usage = text.split("## Usage", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", usage, flags=re.S)
    return [
        line.split("#", 1)[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip().startswith(".venv/bin/candleflow")
    ]


def test_the_readme_starts_with_exactly_the_two_commands() -> None:
    head = README.read_text(encoding="utf-8").split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in head.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_usage_commands_run_in_order(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """The commands run top to bottom in one folder, as a reader would type them."""
    env = cli_env
    commands = _usage_commands()
    assert len(commands) >= 6
    for command in commands:
        args = shlex.split(command)[1:]
        result = subprocess.run(
            [sys.executable, "-m", "candleflow", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert result.stdout.strip(), f"{command} printed nothing"
        if "--json" in args:
            report = json.loads(result.stdout)
            assert report["rows"] > 0 and report["gaps"] == []
