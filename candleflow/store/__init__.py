"""The Parquet bar store (DESIGN §5): :class:`~candleflow.store.bar_store.BarStore` (atomic,
partitioned, locked writes and reads of one series; ``BarStore("s3://bucket/prefix")`` gives the
object-store backend, :mod:`~candleflow.store.object_store`, whose commits are conditional
manifest puts, :mod:`~candleflow.store.manifest`), canonical bar frames and their OHLC checks
(:mod:`~candleflow.store.frames`), the ``key=value`` layout (:mod:`~candleflow.store.partitions`),
durable file replacement (:mod:`~candleflow.store.atomic`), what ``candleflow show`` reports
(:mod:`~candleflow.store.inspect`), the move from the first layout
(:mod:`~candleflow.store.migrate`), SQL over the store (:mod:`~candleflow.store.query`) and
whole files such as reports beside the bars (:mod:`~candleflow.store.files`)."""

from candleflow.store.bar_store import BarStore

__all__ = ["BarStore"]
