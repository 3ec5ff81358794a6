"""The bar store on a real S3 server (SeaweedFS on loopback): the same API and answers as a
local root, the manifest commit protocol, and garbage collection."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candleflow.errors import InvalidBars, InvalidRequest, StoreWriteFailed
from candleflow.store.bar_store import BarStore
from candleflow.store.object_store import ObjectBarStore
from candleflow.store.objects import ObjectPath, StoreUnavailable, check_object_root
from tests.core.conftest import ramp_bars
from tests.store.seaweed import SeaweedServer


def _index(start: str, periods: int, freq: str) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq=freq, tz="UTC", name="timestamp")


def test_an_s3_root_gives_the_object_store_with_the_local_api(s3_store: BarStore) -> None:
    assert isinstance(s3_store, ObjectBarStore) and isinstance(s3_store, BarStore)
    assert isinstance(s3_store.root, ObjectPath)
    assert str(s3_store.series_dir("ib", "EURUSD=X", "1h")).endswith(
        "/bars/source=ib/symbol=EURUSD%3DX/timeframe=1h"
    )
    assert s3_store.series() == [] and s3_store.read_meta("ib", "AAPL", "1h") == {}
    assert s3_store.read("ib", "AAPL", "1h").empty
    with pytest.raises(InvalidRequest):
        s3_store.read("ib", "../x", "1h")


def test_writes_reads_and_metadata_equal_a_local_root(
    s3_store: BarStore, local_store: BarStore
) -> None:
    hourly = ramp_bars(_index("2023-12-30", 200, "1h"))
    minutes = ramp_bars(_index("2024-01-31 20:00", 600, "1min"))
    revised = hourly.iloc[150:170].assign(volume=7.0)
    for store in (s3_store, local_store):
        first = store.write("ib", "AAPL", "1h", hourly, meta={"head_timestamp": hourly.index[0]})
        assert (first.rows_before, first.rows_after, first.rows_added) == (0, 200, 200)
        again = store.write("ib", "AAPL", "1h", revised)
        assert (again.rows_before, again.rows_after, again.rows_added) == (200, 200, 0)
        assert len(again.partitions) == 1
        store.write("ib", "ES", "1m", minutes)
        store.update_meta("ib", "AAPL", "1h", gaps_left=3)
    for args in [("ib", "AAPL", "1h"), ("ib", "ES", "1m")]:
        pd.testing.assert_frame_equal(s3_store.read(*args), local_store.read(*args))
        window = (pd.Timestamp("2024-02-01", tz="UTC"), pd.Timestamp("2024-02-01 03:00", tz="UTC"))
        pd.testing.assert_frame_equal(
            s3_store.read(*args, *window), local_store.read(*args, *window)
        )
        s3_meta, local_meta = s3_store.read_meta(*args), local_store.read_meta(*args)
        s3_meta.pop("updated_at"), local_meta.pop("updated_at")
        assert s3_meta == local_meta
        assert [n.rsplit("/", 1)[-1].split(".")[0] for n, _ in s3_store.partition_rows(*args)] == [
            n.rsplit("/", 1)[-1].split(".")[0] for n, _ in local_store.partition_rows(*args)
        ]
        assert [r for _, r in s3_store.partition_rows(*args)] == [
            r for _, r in local_store.partition_rows(*args)
        ]
    assert s3_store.series() == local_store.series() == [("ib", "AAPL", "1h"), ("ib", "ES", "1m")]
    assert s3_store.read_meta("ib", "AAPL", "1h")["gaps_left"] == 3
    assert (s3_store.read("ib", "AAPL", "1h").loc[revised.index, "volume"] == 7.0).all()


def test_bad_bars_store_nothing(s3_store: BarStore) -> None:
    bars = ramp_bars(_index("2024-01-01", 5, "1h"))
    bars.iloc[2, bars.columns.get_loc("high")] = 0.0
    with pytest.raises(InvalidBars):
        s3_store.write("ib", "AAPL", "1h", bars)
    assert s3_store.series() == [] and s3_store.partitions("ib", "AAPL", "1h") == []


def test_replaced_files_go_after_the_grace_period_and_not_before(
    s3_root: str, s3_server: object
) -> None:
    keep = BarStore(s3_root, gc_grace=3600)
    bars = ramp_bars(_index("2024-01-01", 50, "1h"))
    keep.write("ib", "AAPL", "1h", bars)
    (old,) = keep.partitions("ib", "AAPL", "1h")
    keep.write("ib", "AAPL", "1h", bars.assign(volume=5.0))
    assert isinstance(old, ObjectPath)
    assert _exists(keep, old)  # a reader of the previous manifest still finds it
    collect = BarStore(s3_root, gc_grace=0)
    collect.write("ib", "AAPL", "1h", bars.assign(volume=6.0))
    (current,) = collect.partitions("ib", "AAPL", "1h")
    assert not _exists(collect, old) and _exists(collect, current)
    assert _parquet_files(collect) == [current.key]
    assert (collect.read("ib", "AAPL", "1h")["volume"] == 6.0).all()


def _exists(store: BarStore, path: ObjectPath) -> bool:
    assert isinstance(store, ObjectBarStore)
    return store.client.get(path.key) is not None


def _parquet_files(store: BarStore) -> list[str]:
    assert isinstance(store, ObjectBarStore)
    return [i.key for i in store.client.list(store.root.key + "/") if i.key.endswith(".parquet")]


def test_partition_files_hold_no_column_named_like_a_layout_key(s3_store: BarStore) -> None:
    s3_store.write("ib", "AAPL", "1h", ramp_bars(_index("2024-01-01", 5, "1h")))
    assert isinstance(s3_store, ObjectBarStore)
    (path,) = s3_store.partitions("ib", "AAPL", "1h")
    assert isinstance(path, ObjectPath)
    found = s3_store.client.get(path.key)
    assert found is not None
    import pyarrow as pa

    names = pq.read_schema(pa.BufferReader(found[0])).names
    assert names == ["timestamp", "open", "high", "low", "close", "volume"]


def test_a_refused_write_is_store_write_failed_and_keeps_the_data(
    s3_store: BarStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.store.seaweed import READER_KEY, READER_SECRET

    s3_store.write("ib", "AAPL", "1h", ramp_bars(_index("2024-01-01", 24, "1h")))
    bars = s3_store.read("ib", "AAPL", "1h")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    reader = BarStore(str(s3_store.root))
    pd.testing.assert_frame_equal(reader.read("ib", "AAPL", "1h"), bars, check_freq=False)
    with pytest.raises(StoreWriteFailed) as caught:
        reader.write("ib", "AAPL", "1h", bars.assign(volume=1.0))
    assert str(s3_store.root) in str(caught.value) and caught.value.errno == errno.EACCES
    assert "unchanged" in str(caught.value)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(s3_store.read("ib", "AAPL", "1h"), bars, check_freq=False)


def test_an_endpoint_that_does_not_answer_is_store_unavailable(
    s3_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = BarStore(s3_root)
    with pytest.raises(StoreUnavailable, match="AWS_ENDPOINT_URL"):
        store.read("ib", "AAPL", "1h")
    with pytest.raises(StoreUnavailable):
        check_object_root(s3_root)
    with pytest.raises(StoreUnavailable):  # a write starts by reading the manifest
        store.write("ib", "AAPL", "1h", ramp_bars(_index("2024-01-01", 2, "1h")))


def test_report_files_go_beside_the_bars_on_either_root(s3_root: str, tmp_path: Path) -> None:
    from candleflow.store.files import get_file, put_file

    for root in (s3_root, str(tmp_path)):
        where = put_file(root, "reports/optimize/AAPL/1h/run.html", b"<html>1</html>")
        assert where.startswith(root) and where.endswith("reports/optimize/AAPL/1h/run.html")
        put_file(root, "reports/optimize/AAPL/1h/run.html", b"<html>2</html>")
        assert get_file(root, "reports/optimize/AAPL/1h/run.html") == b"<html>2</html>"
        assert get_file(root, "reports/none.png") is None
        with pytest.raises(InvalidRequest):
            put_file(root, "../escape.html", b"")


def test_a_commit_whose_answer_was_lost_counts_as_done_and_keeps_its_files(
    s3_store: BarStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from candleflow.store.objects import ObjectClient, PreconditionFailed

    bars = ramp_bars(_index("2024-01-01", 30, "1h"))
    s3_store.write("ib", "AAPL", "1h", bars)
    real_put = ObjectClient.put
    lost = {"n": 0}

    def put_then_lose_the_answer(self: ObjectClient, key: str, data: bytes, **kw: object) -> str:
        etag = real_put(self, key, data, **kw)  # type: ignore[arg-type]
        if key.endswith("_manifest.json") and not lost["n"]:
            lost["n"] += 1  # as a retry after a lost answer sees it: our own manifest is there
            raise PreconditionFailed(key)
        return etag

    monkeypatch.setattr(ObjectClient, "put", put_then_lose_the_answer)
    result = s3_store.write("ib", "AAPL", "1h", bars.assign(volume=3.0))
    monkeypatch.undo()
    assert lost["n"] == 1 and result.rows_after == 30
    got = s3_store.read("ib", "AAPL", "1h")  # every file the manifest names is there
    assert (got["volume"] == 3.0).all() and len(got) == 30


_DAYS = pd.date_range("2019-12-20", "2021-01-10", freq="1D", tz="UTC")


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    batches=st.lists(
        st.tuples(st.integers(0, len(_DAYS) - 1), st.integers(1, 40), st.integers(1, 2**31 - 1)),
        min_size=1,
        max_size=4,
    )
)
def test_the_object_store_matches_a_dict_model(
    s3_server: object, batches: list[tuple[int, int, int]]
) -> None:
    from tests.core.store_writer import make_bars

    model: dict[pd.Timestamp, tuple[float, ...]] = {}
    store = BarStore(f"s3://candleflow/model-{uuid.uuid4().hex[:12]}", gc_grace=0)
    for offset, length, version in batches:
        bars = make_bars(_DAYS[offset : offset + length], version)
        new = sum(ts not in model for ts in bars.index)
        result = store.write("synthetic", "M", "1d", bars)
        model.update({ts: tuple(row) for ts, row in zip(bars.index, bars.to_numpy(), strict=True)})
        assert (result.rows_added, result.rows_after) == (new, len(model))
    got = store.read("synthetic", "M", "1d")
    assert list(got.index) == sorted(model)
    assert [tuple(row) for row in got.to_numpy()] == [model[ts] for ts in sorted(model)]
    assert store.read_meta("synthetic", "M", "1d")["rows"] == len(model)
    years = sorted({ts.year for ts in model})
    assert [
        str(p).rsplit("/", 1)[-1].split(".")[0] for p in store.partitions("synthetic", "M", "1d")
    ] == [f"year={y}" for y in years]
    assert len(_parquet_files(store)) == len(years)  # grace 0: every replaced file is gone


def test_a_root_that_is_a_whole_bucket(s3_server: SeaweedServer) -> None:
    bucket = f"whole-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    store = BarStore(f"s3://{bucket}")
    bars = ramp_bars(_index("2024-01-01", 10, "1h"))
    store.write("ib", "AAPL", "1h", bars)
    assert store.series() == [("ib", "AAPL", "1h")]
    assert str(store.series_dir("ib", "AAPL", "1h")) == (
        f"s3://{bucket}/bars/source=ib/symbol=AAPL/timeframe=1h"
    )
    assert len(store.read("ib", "AAPL", "1h")) == 10


def test_stores_survive_pickling_as_tasks_and_workers_pass_them(
    s3_store: BarStore, local_store: BarStore
) -> None:
    import pickle

    for store in (s3_store, local_store):
        store.write("ib", "AAPL", "1h", ramp_bars(_index("2024-01-01", 5, "1h")))
        copy = pickle.loads(pickle.dumps(store))
        assert type(copy) is type(store) and str(copy.root) == str(store.root)
        assert len(copy.read("ib", "AAPL", "1h")) == 5


def test_a_lost_answer_then_another_commit_on_top_still_counts_as_done(
    s3_store: BarStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from candleflow.store.objects import ObjectClient, PreconditionFailed

    hourly = ramp_bars(_index("2024-01-01", 30, "1h"))
    s3_store.write("ib", "AAPL", "1h", hourly)
    real_put = ObjectClient.put
    state = {"lost": False}

    def lose_then_someone_commits(self: ObjectClient, key: str, data: bytes, **kw: object) -> str:
        etag = real_put(self, key, data, **kw)  # type: ignore[arg-type]
        if key.endswith("_manifest.json") and not state["lost"]:
            state["lost"] = True
            # Before our client's retry, another writer commits a different partition.
            BarStore(str(s3_store.root)).write("ib", "AAPL", "1h", hourly.shift(400, "D"))
            raise PreconditionFailed(key)
        return etag

    monkeypatch.setattr(ObjectClient, "put", lose_then_someone_commits)
    s3_store.write("ib", "AAPL", "1h", hourly.assign(volume=3.0))
    monkeypatch.undo()
    got = s3_store.read("ib", "AAPL", "1h")
    assert len(got) == 60 and (got["volume"].iloc[:30] == 3.0).all()  # both commits stand
