"""``python -m bench`` (from the repo root) runs every benchmark and prints its ratios.

Pass names to run a subset: ``python -m bench progress backtest fetch``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _progress() -> None:
    from bench import bench_progress

    bench_progress.main()


def _eta() -> None:
    from bench import bench_eta

    bench_eta.main()


def _backtest() -> None:
    from bench import bench_backtest

    bench_backtest.main()


def _fetch() -> None:
    from bench import bench_fetch

    bench_fetch.main()


def _flow() -> None:
    from bench import bench_flow

    bench_flow.main()


def _import() -> None:
    from bench import bench_import

    bench_import.main([])


def _bayes() -> None:
    from bench import bench_bayes

    bench_bayes.main()


def _store() -> None:
    from bench import bench_store

    bench_store.main()


def _server() -> None:
    from bench import bench_server

    bench_server.main()


BENCHES: dict[str, Callable[[], None]] = {
    "progress": _progress,
    "eta": _eta,
    "backtest": _backtest,
    "fetch": _fetch,
    "flow": _flow,
    "bayes": _bayes,
    "server": _server,
    "import": _import,
    "store": _store,
}


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
        return 2
    for name in names:
        print(f"== {name} ==", flush=True)
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
