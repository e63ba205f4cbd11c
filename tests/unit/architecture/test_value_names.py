"""Each value type of the server has its own name.

Two dataclasses with one name (the engine's release and the ledger's record of it were
both `Release`) make every module that sees both rename one on import, and a reader
guess which is meant. Protocols are left out: a structural type names a role its user
needs, and two users may need the same role.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import dpgate_server

PACKAGE = Path(dpgate_server.__file__).parent


def _is_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _dataclasses_by_name() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                found[node.name].append(module)
    return found


def test_the_reader_finds_the_dataclasses() -> None:
    found = _dataclasses_by_name()
    assert "dpgate_server.queries.model" in found["Release"]
    assert "dpgate_server.ledger.model" in found["StoredRelease"]


def test_no_two_server_dataclasses_share_a_name() -> None:
    shared = {name: modules for name, modules in _dataclasses_by_name().items() if len(modules) > 1}
    assert shared == {}
