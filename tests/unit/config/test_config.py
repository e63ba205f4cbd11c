"""Settings: one TOML file, environment overrides, and refusals that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpgate_server.config import ConfigError, load_settings


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
