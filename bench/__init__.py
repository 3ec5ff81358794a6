"""Benchmarks against peers, one command each, ratios printed (DESIGN §7)."""
