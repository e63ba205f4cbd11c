"""Settings: one TOML file, environment overrides, and refusals that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from dpgate_server.config import ChosenBoundsSettings, ConfigError, load_settings
from dpgate_server.governance.bound_choice import BoundChoicePolicy
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.vocabulary.accounting import Accounting


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dpgate.toml"
    path.write_text(text)
    return path


def test_defaults_bind_loopback() -> None:
    settings = load_settings(None)
    assert settings.server.address.startswith("127.0.0.1:")


def test_file_values_are_read_and_paths_resolved_against_its_folder(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nworkers = 3\n[storage]\ndata_dir = "d"\n')
    settings = load_settings(path)
    assert settings.server.workers == 3
    assert settings.storage.data_dir == tmp_path / "d"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[server]\naddress = "127.0.0.1:5000"\n')
    monkeypatch.setenv("DPGATE_SERVER__ADDRESS", "127.0.0.1:6000")
    assert load_settings(path).server.address == "127.0.0.1:6000"


def test_invalid_value_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nworkers = 0\n")
    with pytest.raises(ConfigError, match=r"server\.workers: Input should be greater"):
        load_settings(path)


def test_unknown_key_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nadress = "127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=r"server\.adress: unknown key"):
        load_settings(path)


def test_unknown_section_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[sever]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r"sever: unknown key"):
        load_settings(path)


def test_address_without_port_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\naddress = "localhost"\n')
    with pytest.raises(ConfigError, match=r"server\.address: .*host:port"):
        load_settings(path)


def test_bad_environment_value_is_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPGATE_DEMO__PRACTICES", "many")
    with pytest.raises(ConfigError, match=r"demo\.practices: .*valid integer"):
        load_settings(None)


def test_invalid_toml_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_spend_limits_are_exact_decimals_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_epsilon_per_query = 0.1\nmax_rho_per_query = '0.3'\n")
    limits = load_settings(path).limits.query_limits()
    assert (limits.max_epsilon, limits.max_rho) == (Decimal("0.1"), Decimal("0.3"))
    assert isinstance(limits.max_epsilon, Decimal)
    assert limits.max_spend_units(Accounting.PURE_DP) == 100_000_000


def test_a_spend_limit_from_the_environment_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPGATE_LIMITS__MAX_EPSILON_PER_QUERY", "2.000000001")
    limits = load_settings(None).limits.query_limits()
    assert limits.max_spend_units(Accounting.PURE_DP) == 2_000_000_001


def test_a_spend_limit_finer_than_a_billionth_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_rho_per_query = '0.0000000001'\n")
    with pytest.raises(ConfigError, match=r"limits\.max_rho_per_query: .*9 decimal places"):
        load_settings(path)


def test_the_query_limits_have_one_set_of_defaults() -> None:
    settings = load_settings(None).limits
    assert settings.query_limits() == QueryLimits(
        worker_memory_bytes=settings.worker_memory_mb * 2**20
    )
    assert settings.worker_memory_mb == 3072  # fits national practice x month (2.2 GiB)


def test_ledger_is_sqlite_unless_a_postgres_url_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(None).ledger.url is None
    monkeypatch.setenv("DPGATE_LEDGER__URL", "postgresql://dpgate:s3cret@db:5432/ledger")
    settings = load_settings(write(tmp_path, "[ledger]\nmax_connections = 4\n"))
    assert settings.ledger.url is not None
    assert settings.ledger.url.get_secret_value() == "postgresql://dpgate:s3cret@db:5432/ledger"
    assert settings.ledger.max_connections == 4
    assert "s3cret" not in repr(settings) + str(settings)


def test_ledger_url_that_is_not_postgres_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[ledger]\nurl = "mysql://root:s3cret@db/ledger"\n')
    with pytest.raises(
        ConfigError, match=r"ledger\.url: Value error, must be a postgresql://"
    ) as bad:
        load_settings(path)
    assert "s3cret" not in str(bad.value)


def test_period_bounds_are_read_per_dataset_and_period(tmp_path: Path) -> None:
    path = tmp_path / "dpgate.toml"
    path.write_text(
        "[publishing.period_bounds.gp_appointments.week]\n"
        "rows = 3\nperiods = 10\npractice_periods = 10\n"
        "[publishing.period_bounds.gp_appointments.month]\nrows = 8\n"
    )
    bounds = load_settings(path).publishing.period_bounds_of()["gp_appointments"]
    week, month = bounds.cap("week"), bounds.cap("month")
    assert week is not None
    assert (week.rows, week.periods, week.practice_periods) == (3, 10, 10)
    assert month is not None
    assert (month.rows, month.periods) == (8, None)
    assert load_settings(None).publishing.period_bounds_of() == {}


def test_chosen_bounds_are_read_per_dataset(tmp_path: Path) -> None:
    path = tmp_path / "dpgate.toml"
    path.write_text(
        "[publishing.chosen_bounds.gp_appointments]\n"
        'bounds = ["max_contributions", "week.rows"]\nlevel = 0.98\nepsilon = 0.2\n'
    )
    policy = load_settings(path).publishing.chosen_bounds_of()["gp_appointments"]
    assert policy.bounds == ("max_contributions", "week.rows")
    assert (policy.level, policy.epsilon_units, policy.rho_units) == (0.98, 200_000_000, 1_250_000)
    assert (policy.max_candidate, policy.max_per_version) == (200, 1)
    assert load_settings(None).publishing.chosen_bounds_of() == {}


def test_a_publish_choosing_bounds_without_a_section_uses_the_sections_defaults() -> None:
    """`dpgate-server publish --choose-bounds` on a dataset without a
    [publishing.chosen_bounds] section falls back to BoundChoicePolicy(): the defaults
    docs/chosen-bounds.md states for that case are the section's (rho 0.00125 is the noise of
    epsilon 0.1)."""
    assert BoundChoicePolicy() == ChosenBoundsSettings().policy()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('bounds = ["weekly"]', "unknown bound"),
        ("level = 1.0", "strictly between 0 and 1"),
        ("level = 0.99995", "more than 4 decimal places"),
        ("epsilon = 0", "epsilon"),
        ("max_candidate = 0", "max_candidate"),
    ],
)
def test_unusable_chosen_bounds_are_refused(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "dpgate.toml"
    path.write_text(f"[publishing.chosen_bounds.gp_appointments]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_a_period_bound_below_one_or_on_another_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dpgate.toml"
    path.write_text("[publishing.period_bounds.gp_appointments.week]\nrows = 0\n")
    with pytest.raises(ConfigError, match="rows"):
        load_settings(path)
    path.write_text("[publishing.period_bounds.gp_appointments.day]\nrows = 2\n")
    with pytest.raises(ConfigError, match="day"):
        load_settings(path)
