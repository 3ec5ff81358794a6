"""The best run's report: a PNG of the equity curve and an HTML page with the parameters, the
metrics and the top table, rendered without pyplot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from candleflow.backtest import run_backtest
from candleflow.optimize.reports import ReportFiles, write_report
from tests.backtest.conftest import synthetic_bars


def test_write_report_puts_a_png_and_a_page_in_the_folder(tmp_path: Path) -> None:
    result = run_backtest(synthetic_bars(2_000, seed=3), "sma_cross", {"fast": 5, "slow": 20})
    top = pd.DataFrame([{"fast": 5, "slow": 20, "objective": 1.25}])
    folder = tmp_path / "reports" / "optimize"
    files = write_report(result, top, tmp_path, "reports/optimize", "run-1", "AAPL 1h <best>")
    assert files == ReportFiles(str(folder / "run-1.png"), str(folder / "run-1.html"))
    assert Path(files.png).read_bytes() == files.image
    assert files.image[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(files.html).read_text(encoding="utf-8")
    assert "<title>AAPL 1h &lt;best&gt;</title>" in page  # the title is escaped
    assert "fast=5, slow=20, long_only=False" in page and "data:image/png;base64," in page
    assert "<td>1.2500</td>" in page and "final_equity" in page


def test_rendering_does_not_import_pyplot(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from candleflow.backtest import run_backtest\n"
        "from candleflow.optimize.reports import render_equity_png\n"
        "from tests.backtest.conftest import synthetic_bars\n"
        "render_equity_png(run_backtest(synthetic_bars(300)), 't')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                         text=True, check=True, timeout=120).stdout  # fmt: skip
    assert out.strip() == "False"
