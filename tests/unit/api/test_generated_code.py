"""The committed generated code must match the contract; staleness is detected."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_fresh(gen_proto: ModuleType, tmp_path: Path) -> None:
    gen_proto.generate(tmp_path)
    assert gen_proto.is_fresh(tmp_path)


def test_changed_contract_is_detected_as_stale(gen_proto: ModuleType, tmp_path: Path) -> None:
    protos = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", protos)
    query = protos / "dpgate" / "v1" / "query.proto"
    query.write_text(
        query.read_text().replace(
            "message ListDatasetsRequest {}",
            "message ListDatasetsRequest {\n  // New.\n  string filter = 1;\n}",
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    gen_proto.generate(out, protos)
    assert not gen_proto.is_fresh(out)


def test_edited_generated_file_is_detected_as_stale(gen_proto: ModuleType, tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    generated.mkdir()
    gen_proto.generate(generated)
    target = tmp_path / "target"
    shutil.copytree(generated, target)
    edited = target / "v1" / "types_pb2.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    assert not gen_proto.is_fresh(generated, target)
