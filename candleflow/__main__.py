"""``python -m candleflow`` runs the CLI."""

import sys

from candleflow.cli import main

sys.exit(main())
