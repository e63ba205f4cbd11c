"""Where the CLI connects and with which token: flags, environment, then a config file.

Precedence, per setting: a command-line option, then its environment variable, then the
chosen profile of the config file, then the built-in default (the demo's address). A
token is looked for the same way; it never has to appear on a command line (where `ps`
and shell history would keep it), and it is never printed.

The config file (`$DPGATE_CONFIG`, else `$XDG_CONFIG_HOME/dpgate/client.toml`, else
`~/.config/dpgate/client.toml`) holds one table per profile:

    [default]
    target = "dpgate.example.nhs.uk:443"
    ca_cert = "~/.config/dpgate/ca.pem"
    token_file = "~/.config/dpgate/analyst.token"

    [admin]
    target = "dpgate.example.nhs.uk:443"
    ca_cert = "~/.config/dpgate/ca.pem"
    token = "dpg_..."          # then keep the file private: chmod 600

    [replicas]
    target = ["127.0.0.1:50051", "127.0.0.1:50052"]   # or "127.0.0.1:50051,127.0.0.1:50052"
"""

from __future__ import annotations

import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TARGET = "127.0.0.1:50051"
"""The embedded demo's address, used when nothing else names a server."""
DEFAULT_PROFILE = "default"
KEYS = ("target", "token", "token_file", "ca_cert", "client_cert", "client_key", "timeout")
"""Keys a profile may set; each is also an environment variable DPGATE_<KEY>."""

_Picker = Callable[[str, object], tuple[str | None, str]]
"""`resolve`'s lookup: a key and its flag to (value, where it came from)."""


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Flags:
    """Connection options given on the command line (None: not given)."""

    profile: str | None = None
    target: str | None = None
    token: str | None = None
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything a client constructor needs; `token` stays out of repr."""

    target: str
    token: str | None
    token_source: str
    """Where the token came from ("DPGATE_TOKEN", "profile admin in FILE", ...), for messages."""
    root_certificates: bytes | None
    private_key: bytes | None
    certificate_chain: bytes | None
    timeout: float | None
    profile: str
    config_file: Path

    def __repr__(self) -> str:
        return f"ConnectionSettings(target={self.target!r}, token_source={self.token_source!r})"

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for Client, AdminClient, AuditClient (or any Connection)."""
        options: dict[str, object] = {
            "root_certificates": self.root_certificates,
            "private_key": self.private_key,
            "certificate_chain": self.certificate_chain,
        }
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return options


def config_path(environ: Mapping[str, str]) -> Path:
    """The config file this environment points at (it need not exist)."""
    if environ.get("DPGATE_CONFIG"):
        return Path(environ["DPGATE_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "dpgate" / "client.toml"


def resolve(flags: Flags, environ: Mapping[str, str]) -> ConnectionSettings:
    """The settings from flags, then environment, then the config file's profile.

    Raises:
        ConfigError: unreadable or malformed file, unknown profile or key, a missing
            certificate file, or a bad timeout.
    """
    path = config_path(environ)
    profile_name = flags.profile or environ.get("DPGATE_PROFILE") or DEFAULT_PROFILE
    explicit = bool(flags.profile or environ.get("DPGATE_PROFILE"))
    profile = _profile(path, profile_name, required=explicit)
    where = f"profile {profile_name!r} in {path}"

    def pick(key: str, flag: object) -> tuple[str | None, str]:
        if flag is not None:
            return str(flag), f"--{key.replace('_', '-')}"
        variable = f"DPGATE_{key.upper()}"
        if environ.get(variable):
            return environ[variable], variable
        if key in profile:
            return _expand(_text(profile[key]), path, key), where
        return None, ""

    target, _ = pick("target", flags.target)
    token, token_source = _token(pick, flags.token)
    ca, _ = pick("ca_cert", flags.ca_cert)
    cert, _ = pick("client_cert", flags.client_cert)
    key, _ = pick("client_key", flags.client_key)
    timeout, _ = pick("timeout", flags.timeout)
    if token is not None and token_source == where and "token" in profile:
        _warn_if_readable(path)
    if (cert is None) != (key is None):
        raise ConfigError("give both client_cert and client_key (mutual TLS), or neither")
    return ConnectionSettings(
        target=target or DEFAULT_TARGET,
        token=token,
        token_source=token_source,
        root_certificates=_read(ca, "ca_cert"),
        private_key=_read(key, "client_key"),
        certificate_chain=_read(cert, "client_cert"),
        timeout=_timeout(timeout),
        profile=profile_name,
        config_file=path,
    )


def _token(pick: _Picker, flag: str | None) -> tuple[str | None, str]:
    """A token given directly beats a token file at the same level of precedence."""
    token, source = pick("token", flag)
    token_file, file_source = pick("token_file", None)
    if token is not None and (token_file is None or _rank(source) <= _rank(file_source)):
        return token.strip(), source
    if token_file is not None:
        try:
            text = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the token file {token_file} ({file_source}): {exc.strerror}"
            ) from None
        return text or None, f"{file_source} (token_file)"
    return None, ""


def _rank(source: str) -> int:
    if source.startswith("--"):
        return 0
    return 1 if source.startswith("DPGATE_") else 2


def _profile(path: Path, name: str, *, required: bool) -> dict[str, object]:
    if not path.exists():
        if required:
            raise ConfigError(f"profile {name!r} asked for, but there is no config file {path}")
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    profile = document.get(name)
    if profile is None:
        if required:
            known = ", ".join(sorted(document)) or "none"
            raise ConfigError(f"no profile {name!r} in {path} (profiles: {known})")
        return {}
    if not isinstance(profile, dict):
        raise ConfigError(f"[{name}] in {path} must be a table of settings")
    unknown = sorted(set(profile) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in [{name}] of {path}; known: {', '.join(KEYS)}"
        )
    return profile


def _text(value: object) -> str:
    """A profile's value as text; a list (of replicas' addresses) joined by commas."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _expand(value: str, path: Path, key: str) -> str:
    """File paths in the config file are relative to its folder, and may start with ~."""
    if key in {"token_file", "ca_cert", "client_cert", "client_key"}:
        return str(path.parent / Path(value).expanduser())
    return value


def _read(file: str | None, what: str) -> bytes | None:
    if file is None:
        return None
    try:
        return Path(file).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror}") from None


def _timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"timeout must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"timeout must be positive, not {value!r}")
    return seconds


def _warn_if_readable(path: Path) -> None:
    """A token in a file others can read is a leaked token; say so (on stderr)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"dpgate: warning: {path} holds a token that others can read; chmod 600 it\n"
        sys.stderr.write(warning)
