"""Fault injection for the IB simulator: dropped connections, delays, injected errors, 1100/1102.

Faults are counted in historical requests (message 20) received by the whole simulator, 1-based,
so a test can say "the 5th request fails" whatever connection it arrives on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from candleflow.errors import InvalidRequest
from candleflow.ibsim.data import HistoricalQuery

#: Texts IB sends with the codes tests inject most.
ERROR_TEXTS: dict[int, str] = {
    162: "Historical Market Data Service error message:HMDS query returned no data: {label} Trades",
    200: "No security definition has been found for the request",
    321: "Error validating request.-'bP' : cause - injected validation failure",
    366: "No historical data query found for ticker id:{req_id}",
    504: "Not connected",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}


def error_text(code: int, query: HistoricalQuery) -> str:
    template = ERROR_TEXTS.get(code, f"Injected error {code}")
    return template.format(label=query.contract.label, req_id=query.req_id)


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong, and when.

    * ``drop_after`` — after answering this many historical requests, the next one closes the
      connection unanswered; it happens ``drops`` times (each after another ``drop_after``).
    * ``stay_down`` — after a drop the simulator stops listening (connects are refused) until
      ``IBSimulator.restore()``.
    * ``delay`` — real seconds to wait before answering each historical request.
    * ``errors`` — request number → error code sent instead of the bars (the text IB uses).
    * ``inject`` — ``inject(number, query)`` may return ``(code, text)`` to answer with instead.
    * ``blip_at`` — before answering this request number, send 1100 then 1102 (data kept).
    """

    drop_after: int | None = None
    drops: int = 1
    stay_down: bool = False
    delay: float = 0.0
    errors: Mapping[int, int] = field(default_factory=dict)
    inject: Callable[[int, HistoricalQuery], tuple[int, str] | None] | None = None
    blip_at: int | None = None

    def __post_init__(self) -> None:
        if self.drop_after is not None and self.drop_after < 0:
            raise InvalidRequest(f"drop_after must be >= 0, got {self.drop_after}")
        if self.delay < 0:
            raise InvalidRequest(f"delay must be >= 0 seconds, got {self.delay}")

    def drops_at(self, number: int, drops_done: int) -> bool:
        """Whether historical request ``number`` (1-based) is the one that drops the line."""
        if self.drop_after is None or drops_done >= self.drops:
            return False
        return number == (drops_done + 1) * self.drop_after + drops_done + 1

    def error_for(self, number: int, query: HistoricalQuery) -> tuple[int, str] | None:
        """The injected error for request ``number``, if any."""
        if self.inject is not None:
            injected = self.inject(number, query)
            if injected is not None:
                return injected
        code = self.errors.get(number)
        return None if code is None else (code, error_text(code, query))
