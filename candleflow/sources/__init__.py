"""Bar sources: where bars come from (synthetic generator, files, Interactive Brokers)."""
