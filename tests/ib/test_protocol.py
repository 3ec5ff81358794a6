"""TWS text-protocol framing: encode, split, decode, version negotiation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from candleflow.errors import InvalidRequest
from candleflow.ibsim import protocol as p

_FIELD_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20
)


def test_a_frame_is_a_big_endian_length_then_nul_terminated_fields() -> None:
    frame = p.encode_fields(176, "20261123 12:00:00 Greenwich Mean Time")
    assert frame == struct.pack(">I", 42) + b"176\x0020261123 12:00:00 Greenwich Mean Time\x00"


def test_fields_are_written_as_tws_writes_them() -> None:
    assert p.format_field(True) == "1"
    assert p.format_field(False) == "0"
    assert p.format_field(None) == ""
    assert p.format_field(0.1) == "0.1"
    assert p.format_field(float("inf")) == "Infinite"
    assert p.format_field(-1) == "-1"


@given(st.lists(st.lists(_FIELD_TEXT, min_size=1, max_size=6), max_size=5), st.integers(1, 7))
def test_split_frames_returns_every_complete_frame_whatever_the_chunking(
    messages: list[list[str]], chunk: int
) -> None:
    wire = b"".join(p.encode_fields(*fields) for fields in messages)
    buffer = bytearray()
    decoded: list[list[str]] = []
    for i in range(0, len(wire), chunk):
        buffer.extend(wire[i : i + chunk])
        decoded.extend(p.decode_fields(payload) for payload in p.split_frames(buffer))
    assert decoded == messages
    assert buffer == bytearray()


def test_an_incomplete_frame_stays_in_the_buffer() -> None:
    frame = p.encode_fields(9, 1, 1)
    buffer = bytearray(frame[:-1])
    assert p.split_frames(buffer) == []
    assert bytes(buffer) == frame[:-1]


def test_an_absurd_frame_length_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="exceeds"):
        p.split_frames(bytearray(struct.pack(">I", p.MAX_FRAME + 1)))


@pytest.mark.parametrize(
    ("offer", "expected"),
    [("v157..176", 176), ("v157..178", 176), ("v100..170", 170), ("v176", 176)],
)
def test_the_version_is_capped_at_176(offer: str, expected: int) -> None:
    assert p.negotiate_version(offer) == expected


@pytest.mark.parametrize("offer", ["v180..190", "hello", ""])
def test_an_impossible_version_range_is_refused(offer: str) -> None:
    with pytest.raises(InvalidRequest):
        p.negotiate_version(offer)


def test_a_contract_is_read_from_its_twelve_fields() -> None:
    fields = ["87", "5", "0", "AAPL", "STK", "", "0.0", "", "", "SMART", "", "USD", "", "", "0"]
    contract = p.WireContract.from_fields(fields, 2)
    assert (contract.symbol, contract.exchange, contract.currency) == ("AAPL", "SMART", "USD")
    assert contract.label == "AAPL@SMART"
    with pytest.raises(InvalidRequest, match="truncated"):
        p.WireContract.from_fields(fields[:10], 2)
