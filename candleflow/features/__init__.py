"""Features (DESIGN §6): the catalogue, spec parsing and computation
(:mod:`~candleflow.features.catalogue`), the array maths of the indicators
(:mod:`~candleflow.features.indicators`) and the feature store beside the bars, updated
incrementally (:mod:`~candleflow.features.store`)."""
