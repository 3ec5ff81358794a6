"""``python -m candleflow.ibsim``: run the IB Gateway simulator in the foreground."""

from __future__ import annotations

import sys

from candleflow.ibsim.server import main

if __name__ == "__main__":
    sys.exit(main())
