"""Both notebooks run top to bottom against a real server, as a planner and an admin would.

One server (port 0, temporary ledger, the session's small dataset, a token per role: the
analyst has epsilon 5) serves both notebooks; its target and tokens reach the notebooks
through the DPGATE_* environment variables they read. A cell that raises fails the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from dpgate_server.store.store import DatasetVersion
from tests.integration.api.conftest import Service, start_service

pytestmark = pytest.mark.slow  # long: started first on parallel runs


NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"
CELL_TIMEOUT_SECONDS = 120


def run_notebook(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute a notebook in a fresh kernel with `env` added to the environment."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return client.execute()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def service_env(service: Service) -> dict[str, str]:
    return {
        "DPGATE_TARGET": service.target,
        "DPGATE_TOKEN": service.tokens["analyst"],
        "DPGATE_ADMIN_TOKEN": service.tokens["admin"],
        "DPGATE_AUDITOR_TOKEN": service.tokens["auditor"],
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # headless, figures kept
    }


@pytest.fixture(scope="module")
def notebook_service(
    small_dataset: DatasetVersion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    started = start_service(small_dataset, tmp_path_factory.mktemp("notebooks"))
    yield started
    started.running.stop(grace_seconds=1)


def output_text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


SCIENTIFIC = re.compile(r"\b\d(\.\d+)?e[+-]?\d+\b")
"""A number in scientific notation (1.2346e6, 1e-09), which a planner should never read."""


def table_text(notebook: nbformat.NotebookNode) -> str:
    """Every table and printed line the notebook showed (text and HTML)."""
    return "\n".join(
        str(output.get("text", ""))
        + str(output.get("data", {}).get("text/plain", ""))
        + str(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def charts(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@pytest.fixture(scope="module")
def planner(notebook_service: Service) -> nbformat.NotebookNode:
    return run_notebook(NOTEBOOKS / "01_planner_exploration.ipynb", service_env(notebook_service))


@pytest.fixture(scope="module")
def budget_admin(
    notebook_service: Service, planner: nbformat.NotebookNode
) -> nbformat.NotebookNode:
    return run_notebook(NOTEBOOKS / "02_budget_admin.ipynb", service_env(notebook_service))


def test_planner_notebook_runs_within_the_analyst_allocation(
    planner: nbformat.NotebookNode,
) -> None:
    text = output_text(planner)
    assert "BudgetExhaustedError" in text
    assert "InvalidQueryError" in text
    assert "1 partial week(s) at the ends of the period left out of the charts" in text
    assert charts(planner) >= 6


def test_planner_notebook_shows_relative_accuracy_and_rho_in_plain_terms(
    planner: nbformat.NotebookNode,
) -> None:
    text = table_text(planner)
    assert "rho 0.5 (epsilon 5.23 at delta 0.000001)" in text
    assert "of the 300 expected" in text  # a preview relative to the planner's figure
    assert "median ± as % of the weekly value" in text
    assert "practices below 1,000 suppressed" in text  # NHS conventions on an answer


def test_budget_admin_notebook_runs(budget_admin: nbformat.NotebookNode) -> None:
    assert "valid=True" in output_text(budget_admin)
    assert charts(budget_admin) >= 2


@pytest.mark.parametrize("name", ["planner", "budget_admin"])
def test_no_table_shows_scientific_notation(request: pytest.FixtureRequest, name: str) -> None:
    text = table_text(request.getfixturevalue(name))
    assert not SCIENTIFIC.findall(text), SCIENTIFIC.search(text)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_draw_their_estimates_with_dpgate_plot(path: Path) -> None:
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    assert "plot." in code
    assert "fill_between" not in code  # bands come from the helpers, not hand-drawn
