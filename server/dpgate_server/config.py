"""Server settings: one TOML file, overridden by environment variables, validated once.

Environment variables override the file with the prefix ``DPGATE_`` and ``__`` between a
section and its key, e.g. ``DPGATE_SERVER__ADDRESS=127.0.0.1:0`` or
``DPGATE_STORAGE__DATA_DIR=/srv/dpgate/data``. A bad value is refused at start-up with
a message naming the key (``server.workers: Input should be greater than 0``), so a
typo never starts a server with a default the operator did not choose.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dpgate_server.governance.bias_figure import BiasFigurePolicy
from dpgate_server.governance.bound_choice import BoundChoicePolicy
from dpgate_server.queries.limits import QueryLimits
from dpgate_server.spend import to_units_floor
from dpgate_server.store.period_bounds import PeriodBounds, PeriodCap


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    """Where and how the gRPC server listens."""

    address: str = "127.0.0.1:50051"
    """host:port to bind; port 0 picks a free port (tests)."""
    rpc_threads: int = Field(default=16, ge=1, le=1024)
    """Threads serving RPCs (cheap RPCs and health never wait behind query workers)."""
    workers: int = Field(default=2, ge=1, le=256)
    """Query worker processes (of the whole server: divided between its serving processes)."""
    processes: int | Literal["auto"] = 1
    """Serving processes on the one port (SO_REUSEPORT; the kernel spreads connections over
    them); "auto": one per core. Limits, workers and caches are divided between them
    (dpgate_server/serving/shares.py); 1 serves from this process as before."""
    grace_seconds: float = Field(default=10.0, ge=0, le=600)
    """How long in-flight RPCs may finish after SIGTERM before they are cancelled."""
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    """Largest message accepted or sent. A larger one, up to twice this, is read and
    refused with MESSAGE_TOO_LARGE; gRPC cuts off anything larger itself."""

    @field_validator("processes")
    @classmethod
    def _processes_in_range(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= int(value) <= 256:
            raise ValueError('must be "auto" or a number from 1 to 256')
        return value

    @field_validator("address")
    @classmethod
    def _address_has_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("must be host:port with a port from 0 to 65535")
        return value


class StorageSettings(_Section):
    """Where state lives. Relative paths are resolved against the config file's folder."""

    data_dir: Path = Path("var/data")
    """The dataset store (immutable versions of Parquet files)."""
    ledger_path: Path = Path("var/ledger.sqlite")
    """The SQLite privacy ledger (unless `ledger.url` names a PostgreSQL database)."""
    key_file: Path = Path("var/keys/pseudonym.key")
    """The server's pseudonymisation key; keep it outside data_dir, owner-only."""


class LedgerSettings(_Section):
    """A PostgreSQL privacy ledger instead of the SQLite file (README "PostgreSQL ledger")."""

    url: SecretStr | None = None
    """postgresql://user:password@host:port/database; unset: SQLite at storage.ledger_path.
    Best given as DPGATE_LEDGER__URL rather than in a file. Logs show it without the password."""
    connect_timeout_seconds: float = Field(default=5.0, ge=1, le=600)
    """How long connecting may take before the database counts as unreachable."""
    max_connections: int = Field(default=16, ge=1, le=1000)
    """Connections this server process keeps open at most."""
    busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """How long a write waits for the ledger's lock before answering OVERLOADED."""

    @field_validator("url")
    @classmethod
    def _is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        scheme = "" if value is None else value.get_secret_value().partition("://")[0]
        if value is not None and scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (unset it to use the SQLite file)")
        return value


class DemoSettings(_Section):
    """The embedded default: a synthetic England-like dataset generated on first start."""

    enabled: bool = True
    """Generate the synthetic dataset if the store has none."""
    practices: int = Field(default=150, ge=1, le=7000)
    """Whole practices to simulate (~150 is about one ICB)."""
    seed: int = Field(default=2025, ge=0)
    """Seed of the deterministic generator."""
    zcdp_dataset: bool = True
    """Also generate "gp_appointments_zcdp" beside it: the same rows cut to per-period
    bounds (docs/per-period-bounds.md), charged in rho (zCDP)."""


_QUERY_DEFAULTS = QueryLimits()
"""The per-query limits' defaults live with the engine (`QueryLimits`), stated once."""


class LimitsSettings(_Section):
    """Per-caller and per-query ceilings (bad or heavy input is refused, never queued forever)."""

    requests_per_second: float = Field(default=20.0, gt=0, le=100_000)
    """Sustained calls per token (token bucket); past it, UNAVAILABLE with a retry hint."""
    burst: int = Field(default=40, ge=1, le=1_000_000)
    """Calls a token may make at once before the rate applies."""
    peer_requests_per_second: float = Field(default=500.0, gt=0, le=1_000_000)
    """Sustained calls per client address, checked before the token is: a flood (with or
    without a valid token) is turned away before it costs a token lookup. Clients behind
    one address share it; past it, UNAVAILABLE/RATE_LIMITED with a retry hint."""
    peer_burst: int = Field(default=1_000, ge=1, le=10_000_000)
    """Calls one client address may make at once before its rate applies."""
    query_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Longest a query may run; its worker is then ended and nothing is charged."""
    max_queued_queries: int = Field(default=8, ge=0, le=10_000)
    """Queries that may wait for a worker; one more is answered OVERLOADED."""
    worker_memory_mb: int = Field(default=3072, ge=512, le=1_048_576)
    """Resident-memory cap of each query worker (an idle worker uses ~160 MB, so >= 512).
    The default fits national queries (practice x month over all 6,229 practices peaked at
    2.2 GiB) with two workers and the server under 8 GiB; a query whose cells alone would
    not fit is refused before it runs."""
    max_cells: int = Field(default=_QUERY_DEFAULTS.max_cells, ge=1)
    """Most cells one answer may have."""
    max_filters: int = Field(default=_QUERY_DEFAULTS.max_filters, ge=0)
    """Most filters one query may have."""
    max_in_values: int = Field(default=_QUERY_DEFAULTS.max_in_values, ge=1)
    """Most values one IN filter may list."""
    max_epsilon_per_query: Decimal = Field(
        default=_QUERY_DEFAULTS.max_epsilon, gt=0, decimal_places=9, allow_inf_nan=False
    )
    """Most epsilon one query may spend (pure-DP datasets); exact, to 0.000000001."""
    max_rho_per_query: Decimal = Field(
        default=_QUERY_DEFAULTS.max_rho, gt=0, decimal_places=9, allow_inf_nan=False
    )
    """Most rho one query may spend (zCDP datasets); exact, to 0.000000001."""

    def query_limits(self) -> QueryLimits:
        """The per-query ceilings these settings give the query engine."""
        return QueryLimits(
            max_cells=self.max_cells,
            max_filters=self.max_filters,
            max_in_values=self.max_in_values,
            max_epsilon=self.max_epsilon_per_query,
            max_rho=self.max_rho_per_query,
            worker_memory_bytes=self.worker_memory_mb * 2**20,
        )


class GovernanceSettings(_Section):
    """Provider uploads, opt-out lists and practice consent (DESIGN.md guarantee 6)."""

    staging_dir: Path | None = None
    """Staged practices, consent and opt-out keys; default: <storage.data_dir>/.governance."""
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, le=64 * 1024**3)
    """Largest raw extract accepted (held in memory while validated, never written raw)."""
    national_opt_out_file: Path | None = None
    """Where the national data opt-out list is dropped; consumed (deleted) when loaded."""
    type1_opt_out_file: Path | None = None
    """Where the type-1 opt-out list is dropped; consumed (deleted) when loaded."""
    granted_by_default: tuple[str, ...] = ("gp_appointments",)
    """Datasets whose practices consent unless they withdraw; others must grant first."""


class PeriodCapSettings(_Section):
    """Caps on one period column of a dataset (store/period_bounds.py); policy, never
    observed maxima."""

    rows: int | None = Field(default=None, ge=1)
    """k: rows per patient in one period."""
    periods: int | None = Field(default=None, ge=1)
    """g: periods (weeks or months) per patient."""
    practice_periods: int | None = Field(default=None, ge=1)
    """Distinct (practice_code, period) groups per patient."""


class ChosenBoundsSettings(_Section):
    """Bounds of one dataset chosen privately at publish (governance/bound_choice.py,
    docs/chosen-bounds.md): OpenDP's DP quantile of rows per patient, its declared spend
    charged to the dataset's cap and recorded in the version's manifest; when the cap cannot
    pay, the publish says so and keeps the policy's bounds."""

    bounds: tuple[str, ...] = ("max_contributions",)
    """The bounds every publish chooses: max_contributions (K), week.rows, week.periods,
    month.rows, month.periods (a period's only where publishing.period_bounds declares a
    bound on that period); empty: none unless `dpgate-server publish --choose-bounds`."""
    level: float = 0.99
    """The quantile level: about this share of patients keep all their rows under each."""
    epsilon: Decimal = Field(
        default=Decimal("0.1"), gt=0, le=10, decimal_places=9, allow_inf_nan=False
    )
    """The spend on a pure-DP dataset, for all the bounds chosen together."""
    rho: Decimal = Field(
        default=Decimal("0.00125"), gt=0, le=10, decimal_places=9, allow_inf_nan=False
    )
    """The spend on a zCDP dataset (0.00125: the same noise as epsilon 0.1)."""
    max_candidate: int = Field(default=200, ge=1, le=100_000)
    """The candidates are 1..max_candidate (public); a chosen bound never exceeds it."""
    max_spends_per_version: int = Field(default=1, ge=1, le=10)
    """How many times one version may be charged for a choice."""

    @model_validator(mode="after")
    def _usable(self) -> ChosenBoundsSettings:
        self.policy()  # the policy's own checks, with their messages
        return self

    def policy(self) -> BoundChoicePolicy:
        """The setting as the publish applies it."""
        return BoundChoicePolicy(
            bounds=self.bounds,
            level=self.level,
            epsilon_units=to_units_floor(self.epsilon),
            rho_units=to_units_floor(self.rho),
            max_candidate=self.max_candidate,
            max_per_version=self.max_spends_per_version,
        )


class BiasFigureSettings(_Section):
    """The bias figure each published version releases once (governance/bias_figure.py):
    a DP count of the patients who lost rows to each contribution bound, charged to the
    dataset's cap and read free by every requester."""

    enabled: bool = True
    """Release a figure with every publish; off, versions record that there is none."""
    epsilon: Decimal = Field(
        default=Decimal("0.05"), gt=0, le=10, decimal_places=9, allow_inf_nan=False
    )
    """The figure's spend on a pure-DP dataset, for all its counts (one per bound)
    together; charged to the dataset's cap once per version."""
    rho: Decimal = Field(
        default=Decimal("0.0005"), gt=0, le=10, decimal_places=9, allow_inf_nan=False
    )
    """The figure's spend on a zCDP dataset, likewise."""
    max_spends_per_version: int = Field(default=1, ge=1, le=10)
    """How many times one version may be charged for a figure. A version is sealed once,
    so above 1 this only lets a publish that died after its charge give the version it
    retries under the same name a figure."""

    def policy(self) -> BiasFigurePolicy:
        """The setting as the publish applies it."""
        return BiasFigurePolicy(
            enabled=self.enabled,
            epsilon_units=to_units_floor(self.epsilon),
            rho_units=to_units_floor(self.rho),
            max_per_version=self.max_spends_per_version,
        )


class PublishingSettings(_Section):
    """Building dataset versions, and how many are kept (DESIGN.md "Dataset versions")."""

    memory_mb: int = Field(default=4096, ge=16, le=1_048_576)
    """Memory a publish may use for rows (the rest of the server is apart); the publish
    splits its work to fit, whatever the data's size, and takes longer when it is low."""
    keep_versions: int = Field(default=2, ge=1, le=10_000)
    """Versions of each dataset kept on disk; older ones are deleted once no query is
    reading them (after a publish and at start). Releases stay in the ledger either way."""
    period_bounds: dict[str, dict[Literal["week", "month"], PeriodCapSettings]] = Field(
        default_factory=dict
    )
    """Per dataset, per period ("week", "month"), the per-period bounds every publish of that
    dataset enforces and verifies with max_contributions, e.g.
    `[publishing.period_bounds.gp_appointments.week] rows = 3, periods = 10,
    practice_periods = 10`. A dataset not named keeps its current version's bounds."""
    bias_figure: BiasFigureSettings = BiasFigureSettings()
    """The DP count of patients whose rows each bound dropped, released with every version."""

    chosen_bounds: dict[str, ChosenBoundsSettings] = Field(default_factory=dict)
    """Per dataset, bounds chosen privately at every publish instead of the policy's, e.g.
    `[publishing.chosen_bounds.gp_appointments] bounds = ["max_contributions"],
    level = 0.99, epsilon = 0.1`. A dataset not named keeps its policy bounds, unless
    `dpgate-server publish --choose-bounds` asks for one publish (with these defaults)."""

    def chosen_bounds_of(self) -> dict[str, BoundChoicePolicy]:
        """The setting as each dataset's BoundChoicePolicy."""
        return {dataset: chosen.policy() for dataset, chosen in self.chosen_bounds.items()}

    def period_bounds_of(self) -> dict[str, PeriodBounds]:
        """The setting as each dataset's PeriodBounds."""
        return {
            dataset: PeriodBounds(
                tuple(
                    PeriodCap(period, cap.rows, cap.periods, cap.practice_periods)
                    for period, cap in caps.items()
                )
            )
            for dataset, caps in self.period_bounds.items()
        }


class CacheSettings(_Section):
    """Memory kept to answer repeated questions cheaply (answers.py); 0 keeps nothing.

    A cache never decides who may see an answer: the ledger decides every repeat first.
    """

    prepared_queries: int = Field(default=1024, ge=0, le=1_000_000)
    """Prepared (checked and priced) queries kept per dataset version and question."""
    releases_mb: int = Field(default=64, ge=0, le=65_536)
    """Decoded releases kept, by the size of their cell tables (a 70k-cell release is
    about 1 MB); counted in the server's memory, not the workers'."""


class TlsSettings(_Section):
    """TLS; all empty means plaintext, which is allowed only on a loopback address."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    """If set, clients must present a certificate signed by this CA (mutual TLS)."""


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port with a port from 0 to 65535")
    return value


class OperationsSettings(_Section):
    """Logs, metrics and health, for whoever runs the server (README "Operating dpgate")."""

    log_format: Literal["json", "text"] = "json"
    """One JSON object per line (for log shippers), or plain text lines."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_enabled: bool = False
    """Serve Prometheus metrics on `metrics_address`."""
    metrics_address: str = "127.0.0.1:9464"
    """host:port of the metrics listener; keep it on loopback (latencies depend on the data)."""
    health_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    """How often the health status re-checks the worker pool and the ledger."""

    @field_validator("metrics_address")
    @classmethod
    def _address_has_port(cls, value: str) -> str:
        return _check_address(value)


class AuditSettings(_Section):
    """Signed heads of the audit chain: published so a cut or rewritten chain is detected."""

    signing_key_file: Path | None = None
    """Ed25519 private key (PEM), created owner-only if missing; outside data_dir. None: no
    signed heads."""
    signed_heads_dir: Path | None = None
    """Where signed heads are written; default: signed-heads/ beside the ledger file."""
    sign_interval_seconds: float = Field(default=3600.0, gt=0, le=31 * 24 * 3600)
    """A head is signed at this interval (when the chain has grown) and after every publish."""


class WebSettings(_Section):
    """The transparency page and the administrator pages, on their own HTTP port."""

    enabled: bool = False
    address: str = "127.0.0.1:8080"
    """host:port; plaintext is allowed only on loopback (like gRPC); TLS uses [tls]."""
    show_organisations: bool = False
    """Whether the public page names the requester's organisation beside each release."""
    near_cap_fraction: float = Field(default=0.8, gt=0, le=1)
    """Administrator pages warn when an allocation or a cap is spent past this fraction."""
    page_size: int = Field(default=50, ge=1, le=1000)
    """Releases per page."""
    admin_session_minutes: int = Field(default=30, ge=1, le=24 * 60)
    """How long an administrator's login lasts (the token is checked again at each page)."""

    @field_validator("address")
    @classmethod
    def _address_has_port(cls, value: str) -> str:
        return _check_address(value)


class Settings(BaseSettings):
    """All server settings."""

    model_config = SettingsConfigDict(
        env_prefix="DPGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    ledger: LedgerSettings = LedgerSettings()
    demo: DemoSettings = DemoSettings()
    limits: LimitsSettings = LimitsSettings()
    cache: CacheSettings = CacheSettings()
    tls: TlsSettings = TlsSettings()
    governance: GovernanceSettings = GovernanceSettings()
    publishing: PublishingSettings = PublishingSettings()
    operations: OperationsSettings = OperationsSettings()
    audit: AuditSettings = AuditSettings()
    web: WebSettings = WebSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so it overrides the file's values passed as init arguments.
        return (env_settings, init_settings)


def load_settings(path: Path | None) -> Settings:
    """Read `path` (TOML; None for defaults only), apply environment overrides, validate.

    Raises:
        ConfigError: the file is missing or unreadable, or a key is unknown or invalid.
    """
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        base = path.resolve().parent
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    return _resolve_paths(settings, base)


def _describe(exc: ValidationError, path: Path | None) -> str:
    source = f"{path} or " if path is not None else ""
    where = f"in {source}the DPGATE_ environment variables"
    lines = [f"invalid configuration {where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolve(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else base / p)

    storage = settings.storage.model_copy(
        update={
            "data_dir": resolve(settings.storage.data_dir),
            "ledger_path": resolve(settings.storage.ledger_path),
            "key_file": resolve(settings.storage.key_file),
        }
    )
    tls = settings.tls.model_copy(
        update={
            "cert_file": resolve(settings.tls.cert_file),
            "key_file": resolve(settings.tls.key_file),
            "client_ca_file": resolve(settings.tls.client_ca_file),
        }
    )
    governance = settings.governance.model_copy(
        update={
            "staging_dir": resolve(settings.governance.staging_dir),
            "national_opt_out_file": resolve(settings.governance.national_opt_out_file),
            "type1_opt_out_file": resolve(settings.governance.type1_opt_out_file),
        }
    )
    audit = settings.audit.model_copy(
        update={
            "signing_key_file": resolve(settings.audit.signing_key_file),
            "signed_heads_dir": resolve(settings.audit.signed_heads_dir),
        }
    )
    return settings.model_copy(
        update={"storage": storage, "tls": tls, "governance": governance, "audit": audit}
    )
