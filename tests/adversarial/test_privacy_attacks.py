"""What an analyst with a valid token would try, against the real server.

Averaging, varied repeats, collusion, asking for private data, and timing. The
differencing attack on neighbouring datasets has its own module (two servers).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import grpc
import polars as pl
import pytest
from scipy import stats

from dpgate import BudgetExhaustedError, Client, InvalidQueryError, QueryResult, count, total
from dpgate_proto.v1 import query_pb2, query_pb2_grpc, types_pb2
from dpgate_server.spend import to_units_floor
from dpgate_server.store.store import DatasetVersion
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import SETUP, Server, scale
from tests.adversarial.wire import METHODS, RUN_QUERY, send

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


@pytest.fixture(scope="module")
def channel(server_a: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server_a.target) as chan:
        yield chan


def client_for(server: Server, token: str) -> Client:
    return Client(server.target, token=token, timeout=120, retries=5)


# -- averaging ------------------------------------------------------------------------


def test_averaging_a_repeated_query_gets_one_release_charged_once(
    server_a: Server, figures: Figures
) -> None:
    requester_id, token = server_a.new_analyst(1, "averager")
    assert server_a.running is not None
    pool = server_a.running.pool
    query = count(server_a.dataset_id).where(status="DNA").by("practice_code").epsilon(0.25)
    repeats = scale(40, 400)
    with client_for(server_a, token) as client:
        first = client.query(query)
        computed = pool.stats().completed
        answers: list[QueryResult] = []
        lock = threading.Lock()

        def ask(n: int) -> None:
            with client_for(server_a, token) as own:
                for _ in range(n):
                    result = own.query(query)
                    with lock:
                        answers.append(result)

        threads = [threading.Thread(target=ask, args=(repeats // 8,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    figures.add("attacks: averaging queries", len(answers) + 1)
    assert len(answers) == repeats // 8 * 8
    assert {a.release_id for a in answers} == {first.release_id}
    assert all(a.repeat and a.charged == 0 for a in answers)
    assert all(a.frame.equals(first.frame) for a in answers)  # nothing new to average
    assert pool.stats().completed == computed  # no repeat even reached a worker
    assert server_a.spent_units(requester_id) == to_units_floor(Decimal("0.25"))


def test_identical_first_asks_racing_are_charged_once(server_a: Server, figures: Figures) -> None:
    requester_id, token = server_a.new_analyst(1, "racing-averager")
    query = count(server_a.dataset_id).where(mode="Telephone").by("age_band").epsilon(0.2)
    answers: list[QueryResult] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def ask() -> None:
        with client_for(server_a, token) as own:
            barrier.wait()
            result = own.query(query)
            with lock:
                answers.append(result)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    figures.add("attacks: averaging queries", len(answers))
    assert len({a.release_id for a in answers}) == 1
    assert sorted(a.repeat for a in answers) == [False] + [True] * 7
    assert server_a.spent_units(requester_id) == to_units_floor(Decimal("0.2"))


# -- varied repeats -------------------------------------------------------------------


def test_equivalent_rewrites_of_a_query_are_the_same_release(
    server_a: Server, figures: Figures
) -> None:
    requester_id, token = server_a.new_analyst(1, "rewriter")
    dataset = server_a.dataset_id
    base = (
        count(dataset)
        .where("mode", "in", ["Telephone", "Face-to-Face"])
        .where(status="DNA")
        .by("practice_code", "sex")
        .epsilon(0.3)
    )
    rewrites = {
        "filters reordered": count(dataset)
        .where(status="DNA")
        .where("mode", "in", ["Face-to-Face", "Telephone"])
        .by("practice_code", "sex")
        .epsilon(0.3),
        "duplicate in-values": count(dataset)
        .where("mode", "in", ["Telephone", "Face-to-Face", "Telephone", "Telephone"])
        .where(status="DNA")
        .by("practice_code", "sex")
        .epsilon(0.3),
        "= written as a one-value in": count(dataset)
        .where("mode", "in", ["Telephone", "Face-to-Face"])
        .where("status", "in", ["DNA"])
        .by("practice_code", "sex")
        .epsilon(0.3),
        "a filter given twice": base.where(status="DNA"),
        "group-by reordered": count(dataset)
        .where("mode", "in", ["Telephone", "Face-to-Face"])
        .where(status="DNA")
        .by("sex", "practice_code")
        .epsilon(0.3),
        "confidence 0.5": base.confidence(0.5),
        "confidence 0.9": base.confidence(0.9),
        "confidence 0.999999": base.confidence(0.999999),
        "the dataset's bound stated": base.contributions(24),
        "epsilon differing below one nano-unit": base.epsilon(0.3000000001),
    }
    with client_for(server_a, token) as client:
        first = client.query(base)
        spent = server_a.spent_units(requester_id)
        answers = {name: client.query(query) for name, query in rewrites.items()}
    figures.add("attacks: varied repeats", len(answers))
    for name, answer in answers.items():
        assert answer.release_id == first.release_id, name
        assert answer.repeat, name
        assert answer.charged == 0, name
        assert answer.frame["value"].equals(first.frame["value"]), name
    assert server_a.spent_units(requester_id) == spent == to_units_floor(Decimal("0.3"))


def test_non_equivalent_variants_are_charged_until_the_allocation_stops_them(
    server_a: Server, figures: Figures
) -> None:
    requester_id, token = server_a.new_analyst(1, "varier")
    dataset = server_a.dataset_id
    base = count(dataset).where(status="DNA").by("practice_code").epsilon(0.3)
    variants = [
        base,
        base.epsilon(0.300000001),  # one nano-unit more: a new release
        count(dataset).where("status", "!=", "Attended").by("practice_code").epsilon(0.3),
        count(dataset).where("status", "in", ["DNA", "Unknown"]).by("practice_code").epsilon(0.3),
        base.contributions(23),
    ]
    charged: list[str] = []
    refused = 0
    with client_for(server_a, token) as client:
        for query in variants:
            try:
                result = client.query(query)
            except BudgetExhaustedError:
                refused += 1
                continue
            assert not result.repeat
            charged.append(result.release_id)
    figures.add("attacks: varied repeats", len(variants))
    assert len(set(charged)) == len(charged) == 3  # 3 x 0.3 fit in 1, the rest are refused
    assert refused == len(variants) - 3
    assert server_a.spent_units(requester_id) == to_units_floor(Decimal("0.9") + Decimal("1e-9"))


# -- collusion ------------------------------------------------------------------------


def test_colluding_analysts_never_exceed_the_dataset_cap(
    server_a: Server, small_dataset: DatasetVersion, figures: Figures
) -> None:
    dataset = server_a.dataset_id
    practices = list(small_dataset.metadata.column("practice_code").values or ())
    colluders = [server_a.new_analyst(0.6, "colluder") for _ in range(4)]  # 2.4 allocated
    with server_a.ledger() as ledger:
        before = ledger.get_dataset(dataset)
        cap = before.spent_units + to_units_floor(1)
        ledger.admin.set_dataset_cap(  # below the allocations on purpose: the cap must bind
            dataset, cap, reason="collusion test", request=SETUP, force=True
        )
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(colluders))

    def collude(index: int, token: str) -> None:
        with client_for(server_a, token) as client:
            barrier.wait()
            extra = ["age_band", "sex", "status", "hcp_type"][index]
            for practice in practices:  # distinct questions, 0.1 each
                query = count(dataset).where(practice_code=practice).by("mode", extra)
                try:
                    client.query(query.epsilon(0.1))
                    outcome = "OK"
                except BudgetExhaustedError:
                    outcome = "RESOURCE_EXHAUSTED"
                with lock:
                    outcomes.append(outcome)

    try:
        threads = [
            threading.Thread(target=collude, args=(i, token))
            for i, (_, token) in enumerate(colluders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        with server_a.ledger() as ledger:
            after = ledger.get_dataset(dataset)
            colluders_spent = sum(
                ledger.get_budget(requester_id, dataset).spent_units
                for requester_id, _ in colluders
            )
            assert ledger.reconcile().ok
    finally:
        with server_a.ledger() as ledger:
            ledger.admin.set_dataset_cap(
                dataset, before.cap_units, reason="collusion test over", request=SETUP, force=True
            )
    figures.add("attacks: collusion queries", len(outcomes))
    assert after.spent_units <= cap
    assert colluders_spent == after.spent_units - before.spent_units == to_units_floor(1)
    assert outcomes.count("OK") == 10  # 1 epsilon of cap, 0.1 each: exactly ten, whoever asks
    assert outcomes.count("RESOURCE_EXHAUSTED") == len(outcomes) - 10


def test_colluders_asking_the_same_question_share_one_release(
    server_a: Server, figures: Figures
) -> None:
    query = count(server_a.dataset_id).where(hcp_type="GP").by("weekday").epsilon(0.2)
    tokens = [server_a.new_analyst(1, "sharer") for _ in range(3)]
    answers = []
    for _, token in tokens:
        with client_for(server_a, token) as client:
            answers.append(client.query(query))
    figures.add("attacks: collusion queries", len(answers))
    assert len({a.release_id for a in answers}) == 1
    assert [a.charged for a in answers] == [Decimal("0.2"), 0, 0]
    assert all(a.frame.equals(answers[0].frame) for a in answers)  # no fresh noise to pool


# -- private columns, identifiers and rows ----------------------------------------------


def _patient_keys(version: DatasetVersion) -> set[int]:
    return set(version.scan_appointments().select("patient_key").unique().collect().to_series())


def _values(rows: list[query_pb2.PublicRow]) -> Iterator[object]:
    for row in rows:
        for value in row.values:
            kind = value.WhichOneof("kind")
            yield None if kind is None else getattr(value, kind)


def test_no_rpc_returns_a_private_column_an_identifier_or_a_row(
    server_a: Server, small_dataset: DatasetVersion, channel: grpc.Channel, figures: Figures
) -> None:
    requester_id, token = server_a.new_analyst(2, "snoop")
    keys = _patient_keys(small_dataset)
    stub_metadata = (("authorization", f"Bearer {token}"),)
    stub = query_pb2_grpc.QueryServiceStub(channel)
    described = stub.DescribeDataset(
        query_pb2.DescribeDatasetRequest(dataset_id=server_a.dataset_id),
        metadata=stub_metadata,
        timeout=60,
    )
    [patient] = [c for c in described.columns if c.name == "patient_key"]
    assert patient.visibility == types_pb2.VISIBILITY_PRIVATE
    assert (patient.groupable, patient.filterable, patient.summable) == (False, False, False)
    assert len(patient.values) == 0
    served = 0
    for table in described.public_tables:
        assert "patient_key" not in table.columns
        rows = []
        for part in stub.StreamPublicTable(
            query_pb2.StreamPublicTableRequest(dataset_id=server_a.dataset_id, table=table.name),
            metadata=stub_metadata,
            timeout=60,
        ):
            assert not {"patient_key", "nhs_number", "date_of_birth", "postcode"} & set(
                part.columns
            )
            rows.extend(part.rows)
        served += len(rows)
        assert not keys & {v for v in _values(rows) if isinstance(v, int)}
    assert served > 0

    refused = 0
    for table in (
        "appointments",
        "../appointments/2025-01",
        "versions/v000001/manifest",
        "CURRENT",
    ):
        with pytest.raises(grpc.RpcError) as caught:
            list(
                stub.StreamPublicTable(
                    query_pb2.StreamPublicTableRequest(dataset_id=server_a.dataset_id, table=table),
                    metadata=stub_metadata,
                    timeout=60,
                )
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        refused += 1

    a_key = min(keys)
    dataset = server_a.dataset_id
    attempts = [
        count(dataset).by("patient_key").epsilon(0.1),
        count(dataset).where(patient_key=a_key).epsilon(0.1),
        count(dataset).where("patient_key", "in", [a_key, a_key + 1]).epsilon(0.1),
        count(dataset).where("patient_key", ">", 0).epsilon(0.1),
        total(dataset, "patient_key").epsilon(0.1),
        count(dataset).by("nhs_number").epsilon(0.1),
        count(dataset).by("date_of_birth").epsilon(0.1),
        count(dataset).where(postcode="LS1 4AP").epsilon(0.1),
    ]
    with client_for(server_a, token) as client:
        for query in attempts:
            with pytest.raises(InvalidQueryError) as caught:
                client.query(query)
            assert caught.value.reason in ("PRIVATE_COLUMN", "NOT_SUMMABLE", "UNKNOWN_COLUMN")
            refused += 1
        answer = client.query(count(dataset).by("practice_code").epsilon(0.1))
    public_codes = set(small_dataset.metadata.column("practice_code").values or ())
    assert set(answer.frame["practice_code"]) == public_codes
    assert answer.frame.height == len(public_codes)  # one row per public key, never a record

    for path in sorted(METHODS):
        if path.startswith("/dpgate.v1.QueryService/"):
            continue
        outcome = send(channel, path, b"", token)
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, path
        refused += 1
    figures.add("attacks: private-data requests refused", refused)
    assert server_a.spent_units(requester_id) == to_units_floor(Decimal("0.1"))


def test_an_analyst_never_lists_another_analysts_releases(
    server_a: Server, figures: Figures
) -> None:
    _, first_token = server_a.new_analyst(1, "lister")
    _, second_token = server_a.new_analyst(1, "lister")
    with client_for(server_a, first_token) as first:
        mine = first.query(count(server_a.dataset_id).by("month").epsilon(0.15)).release_id
    with client_for(server_a, second_token) as second:
        listed = {r.release_id for r in second.releases()}
    figures.add("attacks: private-data requests refused", 1)
    assert mine not in listed


def test_raw_run_query_for_the_patient_key_is_refused_before_any_cost(
    server_a: Server, channel: grpc.Channel
) -> None:
    requester_id, token = server_a.new_analyst(1, "raw-snoop")
    request = query_pb2.RunQueryRequest(
        query=query_pb2.Query(
            dataset_id=server_a.dataset_id,
            aggregate=query_pb2.Aggregate(function=query_pb2.AGGREGATE_FUNCTION_COUNT),
            group_by=["patient_key"],
            epsilon=0.5,
        )
    )
    answer = send(channel, RUN_QUERY, request.SerializeToString(), token)
    assert (answer.code, answer.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PRIVATE_COLUMN")
    assert server_a.spent_units(requester_id) == 0


# -- timing ---------------------------------------------------------------------------


def test_timing_probes_are_each_charged_and_their_latency_is_reported(
    server_a: Server, small_dataset: DatasetVersion, figures: Figures
) -> None:
    """A timing probe is a query like any other: each one is a new release, charged exactly
    its spend, with one cell. The latencies are reported, never asserted (wall-clock);
    see README for what their spread means."""
    requester_id, token = server_a.new_analyst(1_000, "timer")
    dataset = server_a.dataset_id
    first_practice = sorted(small_dataset.metadata.column("practice_code").values or ())[0]
    cases = {
        "no rows": (pl.col("hour") == 3) & (pl.col("mode") == "Home Visit"),
        "one day": pl.col("appointment_date") == pl.date(2025, 3, 12),
        "one practice": pl.col("practice_code") == first_practice,
        "weekday Mon": pl.col("weekday") == "Mon",
        "status Attended": pl.col("status") == "Attended",
        "every row": pl.col("hour") >= 0,
    }
    queries = {
        "no rows": lambda q: q.where(hour=3).where(mode="Home Visit"),
        "one day": lambda q: q.where("appointment_date", "=", "2025-03-12"),
        "one practice": lambda q: q.where(practice_code=first_practice),
        "weekday Mon": lambda q: q.where(weekday="Mon"),
        "status Attended": lambda q: q.where(status="Attended"),
        "every row": lambda q: q.where("hour", ">=", 0),
    }
    scan = small_dataset.scan_appointments()
    rows = scan.select(pl.len()).collect().item()
    selectivity = {
        name: scan.filter(condition).select(pl.len()).collect().item() / rows
        for name, condition in cases.items()
    }
    repeats = scale(6, 40)
    order = [name for name in cases for _ in range(repeats)]
    random.Random(5).shuffle(order)
    latencies: dict[str, list[float]] = {name: [] for name in cases}
    samples: list[tuple[float, float]] = []
    charged = Decimal(0)
    with client_for(server_a, token) as client:
        charged += client.query(count(dataset).epsilon(0.01)).charged  # warm the workers
        for i, name in enumerate(order):
            spend = Decimal("0.01") + Decimal(i) / 10**9
            query = queries[name](count(dataset)).epsilon(spend)
            began = time.perf_counter()
            result = client.query(query)
            elapsed = time.perf_counter() - began
            latencies[name].append(elapsed)
            samples.append((selectivity[name], elapsed))
            assert (result.repeat, result.charged, len(result.frame)) == (False, spend, 1)
            charged += result.charged
    medians = {name: statistics.median(values) for name, values in latencies.items()}
    spread = max(medians.values()) / min(medians.values())
    rho, p_value = stats.spearmanr([x for x, _ in samples], [y for _, y in samples])
    figures.add("attacks: timing queries", len(order))
    figures.set(
        "timing: median ms by selectivity",
        {f"{name} ({selectivity[name]:.2%})": round(1000 * medians[name], 1) for name in cases},
    )
    figures.set("timing: slowest/fastest median", round(spread, 2))
    figures.set("timing: Spearman rho latency~selectivity", f"{rho:.2f} (p={p_value:.2g})")
    assert server_a.spent_units(requester_id) == to_units_floor(charged)
