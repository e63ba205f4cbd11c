"""Several serving processes on one port (`server.processes`), through the real CLI.

One `dpgate-server serve` with processes = 2 is a supervisor and two children, each its
own gRPC server on the same port (SO_REUSEPORT), sharing the ledger as replicas do. The
kernel gives each connection to one child, so every client here has its own channel.
The budget must hold as for one process (no overspend, every answer one release, one
audit chain), one question racing on every channel is computed and charged once, a
second server on the port is refused, and a child's death stops the whole server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import psutil
import pytest

from dpgate import Client, QueryResult, QuerySpec, count
from dpgate_server.ledger.model import Outcome
from dpgate_server.spend import to_units_ceil, to_units_floor
from dpgate_server.store.store import DatasetVersion
from tests.integration.replicas.test_race import ALLOWED, run_race
from tests.support.replicas import SERVE, Replicas, start_replicas

PROCESSES = 2
CLIENTS = 24
"""Channels per race: with 24 the chance that the kernel puts all on one child is 2^-23."""
_PIDS = re.compile(r"listening on \S+ \((\d+) processes, pids ([\d, ]+)\)")


def child_pids(served: Replicas) -> list[int]:
    for line in served.members[0].output:
        match = _PIDS.search(line)
        if match:
            return [int(pid) for pid in match.group(2).split(", ")]
    raise AssertionError("no listening line:\n" + "\n".join(served.members[0].output))


@pytest.fixture(scope="module")
def served(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    state = tmp_path_factory.mktemp("processes")
    with start_replicas(
        1,
        str(state / "ledger.sqlite"),
        small_dataset.path.parents[2],
        state,
        small_dataset.dataset_id,
        workers=PROCESSES,
        processes=PROCESSES,
    ) as group:
        yield group
        children = child_pids(group)
        assert group.stop(0) == 0  # SIGTERM to the supervisor stops every child cleanly
        assert not any(psutil.pid_exists(pid) for pid in children)


@pytest.mark.timeout(300)
def test_racing_clients_on_several_processes_never_spend_beyond_the_allocation(
    served: Replicas,
) -> None:
    assert len(child_pids(served)) == PROCESSES
    with served.ledger() as ledger:
        head_before = ledger.head().count
    requester_id, records = run_race(served, 1)

    outcomes = Counter(r["outcome"] for r in records)
    assert [r for r in records if r["outcome"] not in ALLOWED] == []
    answered = {r["release_id"]: r["charged"] for r in records if r["outcome"] == "OK"}
    assert len(answered) == outcomes["OK"]  # no release id handed out twice
    cap = to_units_floor(1)
    with served.ledger() as ledger:
        budget = ledger.get_budget(requester_id, served.dataset_id)
        releases = {
            r.release_id: r.cost_units
            for r in ledger.list_releases(requester_id, served.dataset_id)
        }
        since = ledger.list_events(after_seq=head_before, limit=10**7)
        verification = ledger.verify()
        head_after = ledger.head()
    assert verification.ok, verification.problem
    assert verification.checked == head_after.count  # one linear chain
    assert budget.spent_units <= cap
    assert cap - budget.spent_units < to_units_floor(Decimal("0.01"))  # spent to the crumb
    assert answered == releases  # every answer is a release; no release nobody saw
    assert sum(releases.values()) == budget.spent_units
    events = [e for e in since if e.requester_id == requester_id and e.rpc == "RunQuery"]
    charged = {e.release_id: e.cost_units for e in events if e.outcome is Outcome.ANSWERED}
    assert charged == releases


@pytest.mark.timeout(300)
def test_one_question_on_every_channel_at_once_is_computed_and_charged_once(
    served: Replicas,
) -> None:
    requester_id, token = served.new_analyst(10, "twin")
    tokens = [token, *served.extra_tokens(requester_id, CLIENTS - 1)]
    asked = [Decimal("0.3") + Decimal(r) / 1000 for r in range(3)]
    children = child_pids(served)
    port = served.members[0].port
    for epsilon in asked:
        query = count(served.dataset_id).where(status="DNA").by("mode").epsilon(epsilon)
        clients = [Client(served.targets[0], token=t, retries=0, timeout=120) for t in tokens]
        for client in clients:  # connected before the barrier, so the calls overlap
            client.describe(served.dataset_id)
        serving = {pid for pid in children if _established(pid, port)}
        assert serving == set(children)  # the kernel gave connections to every child
        answers = ask_at_once(clients, query)
        assert len({a.release_id for a in answers}) == 1
        assert sum(a.charged for a in answers) == epsilon
        assert sum(not a.repeat for a in answers) == 1
        assert all(a.frame.equals(answers[0].frame) for a in answers)  # one noise draw

    with served.ledger() as ledger:
        budget = ledger.get_budget(requester_id, served.dataset_id)
        releases = ledger.list_releases(requester_id, served.dataset_id)
        events = [e for e in ledger.list_events(limit=10**7) if e.requester_id == requester_id]
    assert len(releases) == len(asked)
    assert [e.detail for e in events if "discarded" in e.detail] == []  # computed once
    assert budget.spent_units == sum(to_units_ceil(epsilon) for epsilon in asked)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [1, PROCESSES])
def test_a_second_server_on_the_port_is_refused_with_one_line(
    served: Replicas, processes: int
) -> None:
    port = served.members[0].port
    env = {
        **served.env,
        "DPGATE_SERVER__ADDRESS": f"127.0.0.1:{port}",
        "DPGATE_SERVER__PROCESSES": str(processes),
    }
    second = subprocess.run(
        [*SERVE, str(served.members[0].config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"another dpgate-server (pid {served.members[0].process.pid}) already serves" in lines[0]
    assert served.members[0].alive


@pytest.mark.timeout(300)
def test_a_serving_process_that_dies_stops_the_whole_server(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> None:
    state = tmp_path_factory.mktemp("processes_die")
    with start_replicas(
        1,
        str(state / "ledger.sqlite"),
        small_dataset.path.parents[2],
        state,
        small_dataset.dataset_id,
        workers=PROCESSES,
        processes=PROCESSES,
    ) as group:
        victim, survivor = child_pids(group)
        os.kill(victim, signal.SIGKILL)
        assert group.members[0].process.wait(timeout=120) == 1
        assert not psutil.pid_exists(survivor)
        assert any(
            f"(pid {victim}) exited with status -9" in line for line in group.members[0].output
        )


def ask_at_once(clients: list[Client], query: QuerySpec) -> list[QueryResult]:
    """`query` from every client, released together by a barrier; every answer."""
    barrier = threading.Barrier(len(clients))
    results: list[QueryResult | BaseException] = [RuntimeError("no answer")] * len(clients)

    def ask(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i].query(query)
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    for client in clients:
        client.close()
    answers = [r for r in results if isinstance(r, QueryResult)]
    assert len(answers) == len(results), results
    return answers


def _established(pid: int, port: int) -> bool:
    """Whether process `pid` holds an accepted connection on `port`."""
    return any(
        c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        for c in psutil.Process(pid).net_connections(kind="tcp")
    )
