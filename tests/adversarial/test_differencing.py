"""Differencing on neighbouring datasets: is the target patient in the data or not?

Two servers: `server_a` over the small dataset and `server_b` over the same files without
one patient's rows (the heaviest patient: as many rows as the bound allows, so the two
totals differ as much as one patient can make them). Each trial a fair coin picks a
server; the attacker, who knows both true totals (everything but the answer), asks that
server for a fresh total and guesses "with" when the answer is nearer the larger total.

Pure DP at epsilon bounds any attacker's success at e^eps / (1 + e^eps); the test allows
four standard errors of sampling on top. The same attacker against raw counts (a service
without noise) is right every time.
"""

from __future__ import annotations

import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from dpgate import Client, count
from dpgate_server.store.store import DatasetVersion
from tests.adversarial.conftest import Figures
from tests.adversarial.helpers import Neighbour, Server, scale, true_count

# One pytest-xdist unit: these modules share the session's two attacked servers.
pytestmark = pytest.mark.xdist_group("adversarial")


EPSILON = Decimal("0.5")
THREADS = 3  # server_b has one worker and a queue of two


def dp_bound(epsilon: float) -> float:
    """The highest success rate any test can have against epsilon-DP (fair prior)."""
    return math.exp(epsilon) / (1 + math.exp(epsilon))


@pytest.mark.timeout(scale(300, 3_600))
def test_differencing_attack_succeeds_no_more_often_than_dp_allows(
    server_a: Server,
    server_b: Server,
    small_dataset: DatasetVersion,
    neighbour: Neighbour,
    figures: Figures,
) -> None:
    trials = scale(200, 2_000)
    with_total, without_total = true_count(small_dataset), true_count(neighbour.version)
    assert with_total - without_total == neighbour.target_rows
    assert neighbour.target_rows == small_dataset.metadata.max_contributions
    midpoint = (with_total + without_total) / 2
    budget = float(EPSILON) * trials + 1
    tokens = {True: server_a.new_analyst(budget, "differ")[1]}
    tokens[False] = server_b.new_analyst(budget, "differ")[1]
    targets = {True: server_a, False: server_b}
    rng = random.Random(20250611)
    coins = [rng.random() < 0.5 for _ in range(trials)]
    lock = threading.Lock()
    right: list[bool] = []
    scales: set[float] = set()
    local = threading.local()
    opened: list[Client] = []

    def trial(i: int) -> None:
        has_target = coins[i]
        clients = getattr(local, "clients", None)
        if clients is None:
            clients = {
                side: Client(targets[side].target, token=tokens[side], timeout=120, retries=8)
                for side in (True, False)
            }
            local.clients = clients
            with lock:
                opened.extend(clients.values())
        server = targets[has_target]
        spend = EPSILON + Decimal(i) / 10**9  # a fresh release every trial
        result = clients[has_target].query(count(server.dataset_id).epsilon(spend))
        assert not result.repeat
        guess = int(result.frame["value"][0]) > midpoint
        with lock:
            right.append(guess == has_target)
            scales.add(result.noise_scale)

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(trial, range(trials)))
    finally:
        for client in opened:
            client.close()

    success = sum(right) / trials
    worst_epsilon = float(EPSILON) + trials / 10**9
    bound = dp_bound(worst_epsilon)
    allowed = bound + 4 * math.sqrt(bound * (1 - bound) / trials)
    noise_scale = max(scales)
    expected = 1 - 0.5 * math.exp(-neighbour.target_rows / (2 * noise_scale))
    raw_success = (
        sum(((with_total if coin else without_total) > midpoint) == coin for coin in coins) / trials
    )
    figures.add("attacks: differencing trials", trials)
    figures.set(
        "differencing: success vs bound",
        f"{success:.3f} observed, {expected:.3f} expected for this attacker, "
        f"{bound:.3f} DP bound, {allowed:.3f} allowed; raw counts {raw_success:.0%}",
    )
    assert success <= allowed
    assert raw_success == 1.0
