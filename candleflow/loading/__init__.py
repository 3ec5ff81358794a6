"""Loading bars (DESIGN §2): exchange calendars and the expected bar grid
(:mod:`~candleflow.loading.calendars`), gap analysis (:mod:`~candleflow.loading.gaps`),
IB-compliant segment planning (:mod:`~candleflow.loading.segments`), the load request, the eight
stage functions and the one pipeline that composes them (:mod:`~candleflow.loading.pipeline`),
and universes of symbols for backfills (:mod:`~candleflow.loading.universe`)."""
