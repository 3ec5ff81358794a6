"""Optimization (DESIGN §6): search spaces (:mod:`~candleflow.optimize.space`), grid, random and
Bayesian search with objectives and splits (:mod:`~candleflow.optimize.search`), and the report
of the best run (:mod:`~candleflow.optimize.reports`)."""
