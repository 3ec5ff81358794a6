"""The core never imports Prefect: importing every candleflow module leaves it out."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import candleflow
names = [m.name for m in pkgutil.walk_packages(candleflow.__path__, "candleflow.")
         if not m.name.endswith("__main__")]  # importing __main__ would run the CLI
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect."))
print(len(names))
print(",".join(leaked))
"""


def test_importing_every_core_module_does_not_import_prefect() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    count, leaked = int(out[0]), out[1] if len(out) > 1 else ""
    assert count >= 8, f"walked only {count} modules; the package layout changed?"
    assert leaked == "", f"the core imported prefect: {leaked}"
