"""The Parquet bar store (DESIGN §5): :class:`~candleflow.store.bar_store.BarStore` (atomic,
partitioned, locked writes and reads of one series), canonical bar frames and their OHLC checks
(:mod:`~candleflow.store.frames`), the partition layout (:mod:`~candleflow.store.partitions`),
durable file replacement (:mod:`~candleflow.store.atomic`) and what ``candleflow show`` reports
(:mod:`~candleflow.store.inspect`)."""

from candleflow.store.bar_store import BarStore

__all__ = ["BarStore"]
