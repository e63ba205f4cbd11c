"""Planner workload (issue 18, "Measure"): five questions a planner asks, through gRPC.

On the demo data (150 practices of one ICB, seed 2025, generated once into --folder and
reused), this starts a real server as a subprocess (`dpgate-server serve`, demo off),
bootstraps it like an operator (`dpgate-server create-admin-token`, then an AdminClient
sets caps, turns release sharing off and grants one requester per path exactly its
budget), and asks, with the public client as a planner would:

    Q1 national weekly counts               count by week
    Q2 DNA rate by mode                     DNAs by mode / appointments by mode
    Q3 GP minutes per ICB per month         sum of duration_minutes (GP) by ICB x month
    Q4 appointments per 1,000 patients      count by practice (one ICB) / public list size
    Q5 appointments per practice per week   count by practice x week

For every question it prints the median over its cells of the relative 95% half-width
(half-width / value; a cell whose interval reaches zero counts as wider than any figure):

1. Pure DP, epsilon 1 for all five (the requester is granted exactly 1, so the ledger
   enforces the total): (a) today's path, epsilon 0.2 per question, each asked fresh (Q2
   as two counts of 0.1); (b) three releases run as one question set, the total split by
   the service's set preview (equal relative half-widths at the planner's expected cell
   values), and Q1, Q2 and Q4 derived from them free (Q1 and Q4 add up practice x week
   cells, Q2's two counts add up mode x status cells). Target: Q5 <= 15%.
2. zCDP at equal rho (and its (epsilon, 1e-6) equivalent): the same plan as (b) on the
   demo's zCDP dataset (per-period bounds) and on a K-only twin declared here (the rows of
   the pure-DP version, charged in rho, no per-period bounds), with the same rho shares.
   Target: the per-period bounds cut Q5's noise SD by at least 2x.
3. The bias: per bound, the patients whose rows it dropped and the rows dropped, computed
   here from the generator's raw draws and the versions' files (this bench only; never
   served), beside the DP figure of patients with dropped rows the version's manifest
   publishes, when it carries one.

    uv run python bench/planner_workload.py [--folder /tmp/dpgate-planner-workload]
                                            [--practices 150] [--seed 2025]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpgate import (
    AdminClient,
    Client,
    QueryResult,
    QuerySpec,
    count,
    in_plain_terms,
    median_rel_half_width,
    per_population,
    ratio,
    relative_half_widths,
    total,
)
from dpgate_server.store.bounding import verify_bound
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap
from dpgate_server.store.pseudonym import key_id, load_or_create_key
from dpgate_server.store.store import DatasetStore, DatasetVersion
from dpgate_server.synthetic.appointment_model import appointment_model
from dpgate_server.synthetic.appointments import draw_appointments
from dpgate_server.synthetic.generator import (
    _period_cut,
    _write_public_tables,
    ensure_demo_dataset,
)
from dpgate_server.synthetic.gp_metadata import (
    DATASET_ID,
    MAX_CONTRIBUTIONS,
    ZCDP_DATASET_ID,
    gp_appointments_zcdp_metadata,
)
from dpgate_server.synthetic.population import draw_patients, select_practices
from dpgate_server.vocabulary.england_calendar import window_calendar

K_ONLY_DATASET_ID = "gp_appointments_zcdp_k_only"
"""Declared by this bench: gp_appointments' rows (cut to K only), charged in rho."""
CLI = [sys.executable, "-m", "dpgate_server.cli"]

TOTAL_EPSILON = Decimal(1)
"""One planner's whole budget for the five questions, pure DP."""
TODAY_EPSILON = Decimal("0.2")
"""Today's path: the budget split equally, one fresh release per question."""
TOTAL_RHO = Decimal("0.025")
"""The zCDP comparison's budget: about epsilon 1 at delta 1e-6 (printed by the bench)."""
DERIVED_STATED = Decimal("0.01")
"""The spend a derived question states: never charged (derive="if_any" answers from a
release, free; were none derivable, the fresh release would be refused, the budget being
spent)."""

# The planner's priors, from public figures only (they shape the split, never an answer):
# AGP publishes about 5 appointments per registered patient a year, ~4% of them DNA, about
# 45% with a GP, of about 10 minutes, ~1% home visits; list sizes are the public table's.
PER_PATIENT_YEAR = 5.0
DNA_SHARE = 0.04
GP_SHARE = 0.45
GP_MINUTES = 10.0
WEEKS = 52.0
SMALLEST_MODE_SHARE = 0.01
"""Home visits, the smallest mode the DNA-rate question reads (about 1% in AGP): the split
is set by the smallest cell a question needs, not a typical one (with a typical mode's
DNAs, ~78,000, the split left DNA rates by mode at +/- 81% median)."""


# the machine


def machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cores} cores ({usable} usable), load average {load}, nice {os.nice(0)}"


# the data: the demo's two datasets, and a K-only zCDP twin declared here


def prepare_store(folder: Path, practices: int, seed: int) -> tuple[Path, Path]:
    store, key_file = folder / "store", folder / "secrets" / "pseudonym.key"
    for dataset_id in (DATASET_ID, ZCDP_DATASET_ID):
        started = time.perf_counter()
        version = ensure_demo_dataset(store, key_file, practices, seed, dataset_id=dataset_id)
        print(f"  {dataset_id}: {version.version} ({time.perf_counter() - started:.0f} s)")
    started = time.perf_counter()
    version = declare_k_only(DatasetStore(store), load_or_create_key(key_file), practices)
    print(f"  {K_ONLY_DATASET_ID}: {version.version} ({time.perf_counter() - started:.0f} s)")
    return store, key_file


def declare_k_only(store: DatasetStore, key: bytes, practices: int) -> DatasetVersion:
    """A zCDP dataset holding exactly gp_appointments' rows (each patient cut to K, no
    per-period bounds), as an operator would declare one: the zCDP demo's metadata without
    its period bounds, the files copied and the bound verified again before publishing.
    Reused when its current version was copied from gp_appointments' current one."""
    pure = store.current(DATASET_ID)
    if K_ONLY_DATASET_ID in store.dataset_ids():
        current = store.current(K_ONLY_DATASET_ID)
        if current.manifest.source.get("copied_from") == f"{DATASET_ID}/{pure.version}":
            return current
    table = select_practices(practices)
    metadata = dataclasses.replace(
        gp_appointments_zcdp_metadata(table),
        dataset_id=K_ONLY_DATASET_ID,
        title="GP appointments (synthetic, zCDP, K only): planner bench",
        period_bounds=PeriodBounds(),
    )
    builder = store.begin_version(metadata)
    try:
        months = window_calendar().months
        paths = [builder.appointments_path(m) for m in months]
        for copied, path in zip(pure.appointment_paths(), paths, strict=True):
            shutil.copyfile(copied, path)
        _write_public_tables(builder.public_table_path, table)
        bound = verify_bound(paths, MAX_CONTRIBUTIONS)
        source = {
            "generator": "bench/planner_workload.py (K-only zCDP twin)",
            "copied_from": f"{DATASET_ID}/{pure.version}",
            "key_id": key_id(key),
        }
        return store.publish(builder, bound, source)
    except BaseException:
        builder.discard()
        raise


# the server


@dataclass
class Server:
    process: subprocess.Popen[str]
    target: str
    admin_token: str


def start_server(folder: Path, store: Path, key_file: Path) -> Server:
    ledger = folder / "ledger.sqlite"
    for stale in folder.glob("ledger.sqlite*"):
        stale.unlink()  # every run starts from an empty ledger: the budgets are the plan's
    config = folder / "server.toml"
    config.write_text(
        '[server]\naddress = "127.0.0.1:0"\n'
        f'[storage]\ndata_dir = "{store}"\nledger_path = "{ledger}"\nkey_file = "{key_file}"\n'
        "[demo]\nenabled = false\n"
        "[limits]\nrequests_per_second = 100000\nburst = 100000\n"
    )
    created = subprocess.run(
        [*CLI, "create-admin-token", "--config", str(config)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [*CLI, "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    match = None
    for line in process.stdout:
        match = re.search(r"listening on (\S+)", line)
        if match:
            break
    assert match, "the server did not start"
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()
    return Server(process, match.group(1), created.stdout.strip())


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


def planner(admin: AdminClient, name: str, dataset_id: str, measure: str, amount: Decimal) -> str:
    """A new requester granted exactly `amount` on `dataset_id`; its analyst token."""
    requester = admin.create_requester(name, "planner bench", "issue 18 planner workload")
    epsilon, rho = (amount, None) if measure == "epsilon" else (None, amount)
    admin.grant(
        requester.requester_id,
        dataset_id,
        epsilon=epsilon,
        rho=rho,
        purpose="planner workload benchmark",
        agreement="synthetic data",
    )
    return admin.issue_token(requester.requester_id, "analyst").token


# the five questions


@dataclass(frozen=True)
class Answer:
    """One question's cells (value, ci_low, ci_high) and how it was paid for."""

    frame: pl.DataFrame
    spend: str
    how: str

    @property
    def median(self) -> float:
        return median_rel_half_width(relative_half_widths(self.frame))

    @property
    def reaching_zero(self) -> int:
        return int(relative_half_widths(self.frame)["rel_half_width"].null_count())


QUESTIONS = (
    ("Q1", "national weekly counts"),
    ("Q2", "DNA rate by mode"),
    ("Q3", "GP minutes per ICB x month"),
    ("Q4", "appts per 1,000 patients, practice"),
    ("Q5", "appts per practice x week"),
)


def with_spend(query: QuerySpec, measure: str, amount: Decimal) -> QuerySpec:
    return query.epsilon(amount) if measure == "epsilon" else query.rho(amount)


def gp_minutes(dataset: str) -> QuerySpec:
    return total(dataset, "duration_minutes").where(hcp_type="GP").by("icb_code", "month")


def rates(counts: QueryResult, practices: pl.DataFrame) -> pl.DataFrame:
    return per_population(counts, practices, on="practice_code").select(
        "practice_code", "value", "ci_low", "ci_high"
    )


def todays_path(
    client: Client, dataset: str, icb: str, practices: pl.DataFrame
) -> tuple[list[Answer], QueryResult]:
    """Epsilon 0.2 a question, each asked fresh (as notebooks/01 asks them)."""
    e, half = TODAY_EPSILON, TODAY_EPSILON / 2
    weekly = client.query(count(dataset).by("week").epsilon(e))
    dna = client.query(count(dataset).where(status="DNA").by("mode").epsilon(half))
    every = client.query(count(dataset).by("mode").epsilon(half))
    minutes = client.query(gp_minutes(dataset).epsilon(e))
    icb_counts = client.query(count(dataset).where(icb_code=icb).by("practice_code").epsilon(e))
    practice_week = client.query(count(dataset).by("practice_code", "week").epsilon(e))
    answers = [
        Answer(weekly.frame, f"eps {e}", "fresh"),
        Answer(ratio(dna, every, proportion=True), f"eps {half} + {half}", "fresh x2"),
        Answer(minutes.frame, f"eps {e}", "fresh"),
        Answer(rates(icb_counts, practices), f"eps {e}", "fresh"),
        Answer(practice_week.frame, f"eps {e}", "fresh"),
    ]
    return answers, practice_week


@dataclass(frozen=True)
class Plan:
    """The three releases of the planned path and the planner's expected cell values."""

    releases: tuple[QuerySpec, QuerySpec, QuerySpec]
    expected: tuple[float, float, float]


def plan_for(dataset: str, practices: pl.DataFrame) -> Plan:
    patients = float(practices["list_size"].sum())
    year = patients * PER_PATIENT_YEAR
    icbs = practices["icb_code"].n_unique()
    return Plan(
        releases=(
            count(dataset).by("practice_code", "week"),
            count(dataset).by("mode", "status"),
            gp_minutes(dataset),
        ),
        expected=(
            float(practices["list_size"].median()) * PER_PATIENT_YEAR / WEEKS,  # type: ignore[arg-type]
            year * SMALLEST_MODE_SHARE * DNA_SHARE,
            year * GP_SHARE * GP_MINUTES / 12 / icbs,
        ),
    )


def split(client: Client, plan: Plan, measure: str, amount: Decimal) -> list[Decimal]:
    """The service's split of `amount` over the plan's releases (set preview, free)."""
    stated = [with_spend(q, measure, amount / 3) for q in plan.releases]
    totals = {"total_epsilon": amount} if measure == "epsilon" else {"total_rho": amount}
    preview = client.preview_set(stated, expected=list(plan.expected), **totals)
    return list(preview.split_spends)


def planned_path(
    client: Client,
    plan: Plan,
    shares: Sequence[Decimal],
    measure: str,
    icb: str,
    practices: pl.DataFrame,
) -> tuple[list[Answer], QueryResult]:
    """The plan's releases as one question set, then Q1, Q2 and Q4 derived from them."""
    dataset = plan.releases[0].to_proto().dataset_id
    asked = [with_spend(q, measure, s) for q, s in zip(plan.releases, shares, strict=True)]
    practice_week, mode_status, minutes = client.run_set(asked)
    name = "eps" if measure == "epsilon" else "rho"

    def derived(query: QuerySpec, source: QueryResult) -> QueryResult:
        result = client.query(with_spend(query, measure, DERIVED_STATED), derive="if_any")
        if result.derived_from != source.release_id or result.charged != 0:
            raise RuntimeError(f"{result.canonical_query} was not derived free from the set")
        return result

    weekly = derived(count(dataset).by("week"), practice_week)
    dna = derived(count(dataset).where(status="DNA").by("mode"), mode_status)
    every = derived(count(dataset).by("mode"), mode_status)
    by_practice = derived(count(dataset).by("practice_code"), practice_week)
    in_icb = practices.filter(pl.col("icb_code") == icb)
    weeks, years = (int(r.frame["cells"].max()) for r in (weekly, by_practice))  # type: ignore[arg-type]
    answers = [
        Answer(weekly.frame, "0", f"derived from Q5 ({weeks} cells)"),
        Answer(
            ratio(dna, every, proportion=True),
            f"{name} {shares[1]}",
            "set: mode x status, derived",
        ),
        Answer(minutes.frame, f"{name} {shares[2]}", "set"),
        Answer(rates(by_practice, in_icb), "0", f"derived from Q5 ({years} cells)"),
        Answer(practice_week.frame, f"{name} {shares[0]}", "set"),
    ]
    return answers, practice_week


def noise_sd(result: QueryResult) -> float:
    """The standard deviation of one cell's noise (Laplace scale b: sqrt(2) b)."""
    laplace = "laplace" in result.mechanism.lower()
    return result.noise_scale * (math.sqrt(2) if laplace else 1.0)


def percent(x: float) -> str:
    return ">= 100%" if math.isinf(x) else f"{x:.2%}"


def print_answers(columns: Sequence[tuple[str, list[Answer]]]) -> None:
    head = f"  {'question':40s}" + "".join(f"{name:>30s}" for name, _ in columns)
    print(head)
    for i, (code, text) in enumerate(QUESTIONS):
        cells = []
        for _, answers in columns:
            a = answers[i]
            zero = f" ({a.reaching_zero} at 0)" if a.reaching_zero else ""
            cells.append(f"{percent(a.median) + zero:>30s}")
        print(f"  {code} {text:37s}" + "".join(cells))
    for label, attribute in (("spend", "spend"), ("how", "how")):
        for i, (code, _) in enumerate(QUESTIONS):
            row = "".join(f"{getattr(a[i], attribute)[:29]:>30s}" for _, a in columns)
            print(f"  {label + ' ' + code:40s}{row}")


# the bias: what the bounds dropped, computed here (never served)


@dataclass
class Dropped:
    """What the bounds took, true: patients who lost rows to each step of the cut, rows."""

    raw_rows: int = 0
    pure_rows: int = 0
    zcdp_rows: int = 0
    pure_patients: int = 0
    zcdp_patients: int = 0
    steps: dict[tuple[str, str | None, int], int] = field(default_factory=dict)
    """(bound kind, period, limit) -> patients from whom that step removed a row."""


def cut_steps(bounds: PeriodBounds) -> list[tuple[tuple[str, str | None, int], PeriodBounds]]:
    """Each per-period step of the cut, in the order it is applied, with the bounds of
    every step up to it (store/period_bounding.py: per period, rows, periods, groups)."""
    steps: list[tuple[tuple[str, str | None, int], PeriodBounds]] = []
    done: list[PeriodCap] = []
    for cap in bounds.caps:
        fields: dict[str, int] = {}
        for kind, limit in (
            ("rows_per_period", cap.rows),
            ("periods", cap.periods),
            ("practice_periods", cap.practice_periods),
        ):
            if limit is None:
                continue
            fields[kind.replace("_per_period", "")] = limit
            prefix = PeriodBounds((*done, PeriodCap(cap.period, **fields)))
            steps.append(((kind, cap.period, limit), prefix))
        done.append(cap)
    return steps


def dropped_rows(practices: int, seed: int, bounds: PeriodBounds) -> Dropped:
    """The generator's draws replayed practice by practice (its own random streams): each
    patient's raw count (before K), then the zCDP twin's per-period cut one step at a time
    (the generator cuts K at the draw, then the period bounds). Bench only: never served."""
    table = select_practices(practices)
    model = appointment_model()
    steps = cut_steps(bounds)
    out = Dropped(steps=dict.fromkeys((label for label, _ in steps), 0))
    for position in range(len(table)):
        index = int(table.index[position])
        patients = draw_patients(
            seed, index, int(table.list_size[position]), int(table.first_patient[position])
        )
        raw = draw_appointments(model, seed, index, patients, 10**9)
        ids, counts = np.unique(raw.patient, return_counts=True)
        over_k = set(ids[counts > MAX_CONTRIBUTIONS].tolist())
        drawn = draw_appointments(model, seed, index, patients, MAX_CONTRIBUTIONS)
        part = {
            "patient_key": drawn.patient.astype(np.int64),
            "practice": np.full(len(drawn), position, dtype=np.int32),
            "day": drawn.day,
        }
        alive = np.ones(len(drawn), dtype=np.bool_)
        lost: set[int] = set()
        for label, prefix in steps:
            kept = _period_cut(part, prefix, seed, index)
            removed = set(np.unique(drawn.patient[alive & ~kept]).tolist())
            out.steps[label] += len(removed)
            lost |= removed
            alive = kept
        out.raw_rows += int(counts.sum())
        out.pure_rows += len(drawn)
        out.zcdp_rows += int(alive.sum())
        out.pure_patients += len(over_k)
        out.zcdp_patients += len(over_k | lost)
    return out


Figures = dict[tuple[str, str | None, int], str]
"""A version's published bias figure: (bound kind, period, limit) -> "n +/- m"."""


def published_figures(client: Client, dataset_id: str) -> Figures:
    """The DP counts of patients with dropped rows the current version publishes (issue 18
    item 2), read as every requester reads them (DescribeDataset, free); empty when the
    version carries none (the demo generator's versions record none)."""
    figure = client.describe(dataset_id).bias_figure
    if figure is None or not figure.released:
        return {}
    return {
        (c.bound, c.period, c.limit): f"{c.value:,} +/- {c.half_width:,.0f}" for c in figure.counts
    }


def bias(store: Path, practices: int, seed: int, published: dict[str, Figures]) -> None:
    datastore = DatasetStore(store)
    pure, zcdp = datastore.current(DATASET_ID), datastore.current(ZCDP_DATASET_ID)
    started = time.perf_counter()
    found = dropped_rows(practices, seed, zcdp.metadata.period_bounds)
    for version, replayed in ((pure, found.pure_rows), (zcdp, found.zcdp_rows)):
        on_disk = version.scan_appointments().select(pl.len()).collect().item()
        assert on_disk == replayed, f"the replay differs from {version.dataset_id}'s files"
    seconds = time.perf_counter() - started

    print(
        f"\n3. Bias: what the bounds dropped, true (the generator's draws replayed here, checked"
        f" against the versions' files, {seconds:.0f} s; never served). Raw rows"
        f" {found.raw_rows:,}; K is cut at the draw, then the zCDP twin's period bounds in order."
    )
    heading = f"{'patients who lost rows':>23s} {'published DP figure':>22s}"
    print(f"  {'dataset':22s} {'bound':22s} {heading}")
    k_label: tuple[str, str | None, int] = ("total_rows", None, MAX_CONTRIBUTIONS)
    rows = [(DATASET_ID, k_label, found.pure_patients)]
    rows.append((ZCDP_DATASET_ID, k_label, found.pure_patients))
    rows += [(ZCDP_DATASET_ID, label, n) for label, n in found.steps.items()]
    for dataset, label, n in rows:
        figure = published.get(dataset, {}).get(label, "not published")
        print(f"  {dataset:22s} {describe_bound(label):22s} {n:>23,} {figure:>22s}")
    if not any(published.values()):
        print(
            "  (not published: the demo generator's versions record no bias figure; a publish"
            " from staged extracts releases one)"
        )
    print(f"  {'dataset':22s} {'rows dropped':>14s} {'% of raw rows':>14s} {'patients':>10s}")
    for name, kept, patients in (
        (DATASET_ID, found.pure_rows, found.pure_patients),
        (ZCDP_DATASET_ID, found.zcdp_rows, found.zcdp_patients),
    ):
        dropped = found.raw_rows - kept
        print(f"  {name:22s} {dropped:>14,} {dropped / found.raw_rows:>14.2%} {patients:>10,}")


def describe_bound(label: tuple[str, str | None, int]) -> str:
    kind, period, limit = label
    if kind == "total_rows":
        return f"K = {limit} rows"
    if kind == "rows_per_period":
        return f"{limit} rows a {period}"
    if kind == "periods":
        return f"{limit} {period}s"
    return f"{limit} practice-{period}s"


# the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/dpgate-planner-workload"))
    parser.add_argument("--practices", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()
    folder: Path = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"data: {args.practices} practices, seed {args.seed}, in {folder}")
    store, key_file = prepare_store(folder, args.practices, args.seed)
    server = start_server(folder, store, key_file)
    try:
        published = run_questions(server)
    finally:
        stop_server(server)
    bias(store, args.practices, args.seed, published)
    print(f"\nmachine at the end: {machine()}")


def run_questions(server: Server) -> dict[str, Figures]:
    with AdminClient(server.target, server.admin_token) as admin:
        admin.set_cap(DATASET_ID, epsilon=10, reason="planner bench")
        for dataset in (ZCDP_DATASET_ID, K_ONLY_DATASET_ID):
            admin.set_cap(dataset, rho=10, reason="planner bench")
        for dataset in (DATASET_ID, ZCDP_DATASET_ID, K_ONLY_DATASET_ID):
            admin.set_release_sharing(dataset, False)  # no path answers from another's
        today = planner(admin, "today", DATASET_ID, "epsilon", TOTAL_EPSILON)
        planned = planner(admin, "planned", DATASET_ID, "epsilon", TOTAL_EPSILON)
        periods = planner(admin, "per-period", ZCDP_DATASET_ID, "rho", TOTAL_RHO)
        k_only = planner(admin, "k-only", K_ONLY_DATASET_ID, "rho", TOTAL_RHO)

    def as_planner(token: str, work: Callable[[Client], Any]) -> Any:
        with Client(server.target, token) as client:
            return work(client)

    with Client(server.target, today) as client:
        practices = client.public_table(DATASET_ID, "practices")
    icb = str(practices.group_by("icb_code").len().sort("len", descending=True)["icb_code"][0])
    in_icb = practices.filter(pl.col("icb_code") == icb)
    print(f"\nQ4's ICB: {icb} ({in_icb.height} practices; list sizes from the public table)")

    started = time.perf_counter()
    a, q5_today = as_planner(today, lambda c: todays_path(c, DATASET_ID, icb, in_icb))
    plan = plan_for(DATASET_ID, practices)
    shares = as_planner(planned, lambda c: split(c, plan, "epsilon", TOTAL_EPSILON))
    b, q5_planned = as_planner(
        planned, lambda c: planned_path(c, plan, shares, "epsilon", icb, practices)
    )
    left = {
        name: as_planner(token, lambda c: c.budget(DATASET_ID)[0].remaining)
        for name, token in (("a", today), ("b", planned))
    }
    print(
        f"\n1. Pure DP, epsilon {TOTAL_EPSILON} for all five ({time.perf_counter() - started:.0f}"
        " s): median relative 95% half-width over each question's cells"
        " (cells whose interval reaches 0 count as wider than any figure)"
    )
    print(
        "   (b) split by the set preview at expected cells "
        + ", ".join(f"{x:,.0f}" for x in plan.expected)
        + " (median practice-week, home visit DNAs, GP minutes per ICB-month):"
        + f" eps {', '.join(map(str, shares))}"
    )
    print_answers([("(a) today: 0.2 each, fresh", a), ("(b) derived + set split", b)])
    print(f"  budget left: (a) {left['a']}, (b) {left['b']}")
    target = b[4].median <= 0.15
    print(
        f"  target practice x week <= 15% with all five answered: (b) {percent(b[4].median)}"
        f" -> {'met' if target else 'MISSED'} (today's path {percent(a[4].median)});"
        f" Q5 noise SD (a) {noise_sd(q5_today):,.1f}, (b) {noise_sd(q5_planned):,.1f}"
    )

    started = time.perf_counter()
    zplan = plan_for(ZCDP_DATASET_ID, practices)
    zshares = as_planner(periods, lambda c: split(c, zplan, "rho", TOTAL_RHO))
    per_period, q5_periods = as_planner(
        periods, lambda c: planned_path(c, zplan, zshares, "rho", icb, practices)
    )
    kplan = plan_for(K_ONLY_DATASET_ID, practices)
    k_answers, q5_k = as_planner(
        k_only, lambda c: planned_path(c, kplan, zshares, "rho", icb, practices)
    )
    equivalent = in_plain_terms(TOTAL_RHO, "zcdp")
    print(
        f"\n2. zCDP, {equivalent} for all five on each dataset, the same rho shares"
        f" ({time.perf_counter() - started:.0f} s): rho {', '.join(map(str, zshares))}"
        " (practice-week, mode x status, GP minutes), split by the set preview on the"
        " per-period dataset"
    )
    print_answers([("K only", k_answers), ("per-period bounds", per_period)])
    totals = [float(x[0].frame["value"].sum()) for x in (k_answers, per_period)]
    print(
        f"  year's total (Q1's weeks added up): K only {totals[0]:,.0f}, per-period"
        f" {totals[1]:,.0f} ({totals[1] / totals[0] - 1:+.1%}: the rows the period bounds drop)"
    )
    sd_k, sd_p = noise_sd(q5_k), noise_sd(q5_periods)
    print(
        f"  Q5 noise SD at rho {zshares[0]}: K only {sd_k:,.1f}, per-period {sd_p:,.1f}:"
        f" {sd_k / sd_p:.2f}x smaller -> target >= 2x {'met' if sd_k / sd_p >= 2 else 'MISSED'}"
    )
    with Client(server.target, today) as client:
        return {d: published_figures(client, d) for d in (DATASET_ID, ZCDP_DATASET_ID)}


if __name__ == "__main__":
    main()
