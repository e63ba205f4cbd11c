"""The client installs and imports without the server's dependencies."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_base_dependencies_exclude_the_server_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for server_only in ("opendp", "numpy", "grpcio-health-checking", "grpcio-reflection"):
        assert server_only not in base
    server = " ".join(project["optional-dependencies"]["server"])
    assert "opendp[polars]==0.16.0" in server
    assert "polars==1.36.1" in server


def test_importing_the_client_and_its_stubs_loads_no_server_code() -> None:
    code = (
        "import sys, dpgate\n"
        "from dpgate_proto.v1 import query_pb2_grpc\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('opendp', 'dpgate_server')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_wheel_ships_every_package_including_the_generated_code() -> None:
    """`dpgate_proto` (generated code shared by client and server) is its own package."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    shipped = set(wheel["targets"]["wheel"]["packages"])
    on_disk = {
        f"{folder}/{p.name}"
        for folder in ("client", "server")
        for p in (ROOT / folder).iterdir()
        if (p / "__init__.py").is_file()
    }
    assert "client/dpgate_proto" in shipped
    assert shipped == on_disk


SERVER_ONLY_MODULES = (
    "opendp",
    "numpy",
    "pyarrow",
    "psutil",
    "pydantic",
    "pydantic_settings",
    "grpc_health",
    "grpc_reflection",
    "cryptography",
    "starlette",
    "jinja2",
    "uvicorn",
    "prometheus_client",
)


def test_dpgate_server_on_a_client_only_install_says_to_install_the_server_extra() -> None:
    """The server's modules made unimportable, as on `pip install dpgate`."""
    code = (
        "import sys\n"
        f"for name in {SERVER_ONLY_MODULES!r}:\n"
        "    sys.modules[name] = None\n"
        "sys.argv = ['dpgate-server', 'serve']\n"
        "from dpgate_server.cli import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'dpgate[server]'" in line


def test_a_missing_module_of_our_own_is_not_blamed_on_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['dpgate_server.commands'] = None\n"
        "from dpgate_server.cli import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr
    assert "dpgate[server]" not in result.stderr
