"""TWS API text-protocol framing and the message vocabulary the simulator speaks (server v176).

Every message after the greeting is a 4-byte big-endian length followed by fields, each ended by
NUL. The client opens with raw ``API\\0`` and one framed ``v<min>..<max>`` version range; the
server answers one frame of two fields, its version and the connection time
(``../shared/IB_PROTOCOL.md``). This module only turns bytes into field lists and back.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

from candleflow.errors import InvalidRequest

SERVER_VERSION = 176
MAX_FRAME = 16 * 1024 * 1024
HANDSHAKE_PREFIX = b"API\0"
_LENGTH = struct.Struct(">I")
_VERSION_RANGE = re.compile(r"v(\d+)(?:\.\.(\d+))?")

# client → server message ids
IN_REQ_HISTORICAL_DATA = 20
IN_REQ_CONTRACT_DETAILS = 9
IN_CANCEL_HISTORICAL_DATA = 25
IN_REQ_HEAD_TIMESTAMP = 87
IN_CANCEL_HEAD_TIMESTAMP = 90
IN_START_API = 71
IN_REQ_POSITIONS = 61
IN_REQ_OPEN_ORDERS = 5
IN_REQ_COMPLETED_ORDERS = 99
IN_REQ_ACCOUNT_UPDATES = 6
IN_REQ_ACCOUNT_UPDATES_MULTI = 76
IN_REQ_EXECUTIONS = 7
IN_REQ_ACCOUNT_SUMMARY = 62
IN_REQ_CURRENT_TIME = 49

# server → client message ids
OUT_ERROR = 4
OUT_NEXT_VALID_ID = 9
OUT_CONTRACT_DATA = 10
OUT_MANAGED_ACCOUNTS = 15
OUT_HISTORICAL_DATA = 17
OUT_CURRENT_TIME = 49
OUT_CONTRACT_DATA_END = 52
OUT_OPEN_ORDER_END = 53
OUT_ACCOUNT_DOWNLOAD_END = 54
OUT_EXEC_DETAILS_END = 55
OUT_POSITION_END = 62
OUT_ACCOUNT_SUMMARY_END = 64
OUT_ACCOUNT_UPDATE_MULTI_END = 74
OUT_HEAD_TIMESTAMP = 88
OUT_COMPLETED_ORDERS_END = 102

Field = str | int | float | bool | None


def format_field(value: Field) -> str:
    """One field as TWS writes it: booleans ``1``/``0``, None empty, floats without noise."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isinf(value):
            return "Infinite"
        return repr(value)
    return str(value)


def _format_any(value: Field) -> str:
    # Strings and ints (most fields) skip format_field's checks; bool is an int, so its exact
    # type is looked up, not isinstance.
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is int:
        return str(value)
    return format_field(value)


def encode_fields(*fields: Field) -> bytes:
    """A framed message: length prefix + NUL-terminated fields."""
    payload = ("\0".join(map(_format_any, fields)) + "\0").encode() if fields else b""
    return _LENGTH.pack(len(payload)) + payload


def decode_fields(payload: bytes) -> list[str]:
    """The fields of one frame's payload (the trailing NUL ends the last field)."""
    if not payload:
        return []
    text = payload.decode(errors="backslashreplace")
    fields = text.split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete frame payload at the start of ``buffer``."""
    frames: list[bytes] = []
    while len(buffer) >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(buffer)
        if length > MAX_FRAME:
            raise InvalidRequest(f"TWS frame of {length} bytes exceeds the {MAX_FRAME} limit")
        end = _LENGTH.size + length
        if len(buffer) < end:
            break
        frames.append(bytes(buffer[_LENGTH.size : end]))
        del buffer[:end]
    return frames


def negotiate_version(version_range: str, server_version: int = SERVER_VERSION) -> int:
    """The version to speak for a client's ``v157..178`` range (capped at ``server_version``).

    Raises ``InvalidRequest`` when the client's minimum is above what the server speaks.
    """
    match = _VERSION_RANGE.match(version_range.strip())
    if match is None:
        raise InvalidRequest(
            f"malformed TWS version range {version_range!r}: expected v<min>..<max>"
        )
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if low > server_version:
        raise InvalidRequest(
            f"client needs TWS API version >= {low}; this server speaks {server_version}"
        )
    return min(high, server_version)


@dataclass(frozen=True, slots=True)
class WireContract:
    """The 12 contract fields of a request (IB_PROTOCOL.md)."""

    con_id: str
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def from_fields(cls, fields: list[str], at: int) -> WireContract:
        """Read the 12 contract fields of ``fields`` starting at index ``at``."""
        part = fields[at : at + 12]
        if len(part) != 12:
            raise InvalidRequest(f"truncated contract in message {fields[:2]}: {part}")
        return cls(*part)

    @property
    def label(self) -> str:
        """``SYM@EXCH`` as IB writes it in error texts."""
        return f"{self.symbol}@{self.exchange or 'SMART'}"
