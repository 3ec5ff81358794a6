"""``python -m bench`` runs every benchmark in this folder and prints its ratios."""

from __future__ import annotations

from bench import bench_progress


def main() -> None:
    print("== progress tracker ==")
    bench_progress.main()


if __name__ == "__main__":
    main()
