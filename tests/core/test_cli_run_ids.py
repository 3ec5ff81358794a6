"""Run ids in the CLI: `runs` shows each as a unique prefix; `watch` and `cancel` accept a
whole id or a unique start of one, and name the candidates when a start is ambiguous."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from candleflow.cli.runs import check_run_ref, resolve_run_id, short_ids
from candleflow.errors import InvalidRequest

IDS = [
    UUID("2e55bfd9-eb16-46ef-8e7e-3a54f07fd68a"),
    UUID("2e55bfd9-0000-46ef-8e7e-3a54f07fd68a"),  # shares 8 characters with the first
    UUID("b54d1968-1617-4668-ac6b-2497d3d7fd59"),
]


@dataclass(frozen=True)
class FakeRun:
    id: UUID
    name: str


class FakeClient:
    """Answers ``read_flow_runs`` page by page, as the Prefect client does."""

    def __init__(self, runs: list[FakeRun]) -> None:
        self.runs = runs
        self.pages = 0

    def read_flow_runs(self, *, sort: Any, limit: int, offset: int) -> list[FakeRun]:
        self.pages += 1
        return self.runs[offset : offset + limit]


@pytest.fixture
def client() -> FakeClient:
    return FakeClient([FakeRun(i, f"run {n}") for n, i in enumerate(IDS)])


def test_short_ids_are_eight_characters_unless_that_is_ambiguous() -> None:
    assert short_ids(IDS) == {
        IDS[0]: "2e55bfd9-e",
        IDS[1]: "2e55bfd9-0",
        IDS[2]: "b54d1968",
    }


def test_a_whole_id_needs_no_lookup(client: FakeClient) -> None:
    assert resolve_run_id(client, str(IDS[2]).upper()) == IDS[2]
    assert client.pages == 0


@pytest.mark.parametrize("prefix", ["b", "b54d", "B54D1968-16"])
def test_a_unique_prefix_names_its_run(client: FakeClient, prefix: str) -> None:
    assert resolve_run_id(client, prefix) == IDS[2]


def test_an_ambiguous_prefix_names_the_candidates(client: FakeClient) -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve_run_id(client, "2e55")
    message = str(caught.value)
    assert "ambiguous" in message and str(IDS[0]) in message and str(IDS[1]) in message
    assert "run 0" in message and "\n" not in message


def test_an_unknown_prefix_is_bad_input(client: FakeClient) -> None:
    with pytest.raises(InvalidRequest, match="no flow run id starts with 'ff'"):
        resolve_run_id(client, "ff")


@pytest.mark.parametrize("text", ["zz", "", "--", "run-1"])
def test_a_malformed_id_is_rejected_without_the_api(text: str) -> None:
    with pytest.raises(InvalidRequest, match="malformed flow run id"):
        check_run_ref(text)


def test_every_page_of_runs_is_searched() -> None:
    many = [FakeRun(UUID(int=n), f"run {n}") for n in range(450)]
    wanted = UUID("ab000000-0000-0000-0000-000000000001")
    client = FakeClient([*many, FakeRun(wanted, "last")])
    assert resolve_run_id(client, "ab") == wanted
    assert client.pages == 3
