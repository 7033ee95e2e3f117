"""The direction of imports between txgate's packages (docs/architecture.md, "Import rules").

Every module under `src/txgate` is parsed with `ast`, never imported, so a forbidden import is
found wherever it sits: at the top, inside a function, under `if TYPE_CHECKING:`, written
relative (`from ..custody import vault`) or as `importlib.import_module("txgate.custody")`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "txgate"

FOUNDATIONS = frozenset(
    f"{ROOT}.{name}" for name in ("core", "config", "storage", "chain", "jsonrpc", "audit")
)
PARTS = frozenset(
    f"{ROOT}.{name}" for name in ("custody", "relay", "wallet", "insight", "dashboard")
)
CLI = f"{ROOT}.cli"
CORE = f"{ROOT}.core"


@dataclass(frozen=True, slots=True)
class Violation:
    where: str
    line: int
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line} imports {self.target}: {self.rule}"


def area(module: str) -> str | None:
    """The top-level txgate package a dotted name belongs to (`txgate.custody.vault` →
    `txgate.custody`); `None` for the root package and for modules outside txgate."""
    parts = module.split(".")
    if parts[0] != ROOT or len(parts) < 2:
        return None
    return f"{ROOT}.{parts[1]}"


def broken_rule(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target`, or None when the import is allowed."""
    source, destination = area(importer), area(target)
    if destination is None or source == destination:
        return None
    if source == CORE:
        return f"{CORE} holds the domain types and imports no other txgate package"
    if destination == CLI:
        return f"only {CLI} imports {CLI}: it wires the parts together, nothing depends on it"
    if (source is None or source in FOUNDATIONS) and destination in PARTS:
        return f"a foundation ({source or ROOT}) must not import a part ({destination})"
    if source in PARTS and destination in PARTS:
        return (
            f"parts never import each other ({source} → {destination}); "
            "they meet over an API, and only the CLI wires them together"
        )
    return None


def resolve_relative(module: str, *, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 >= len(package):
        raise ValueError(f"relative import beyond the top-level package in {module}")
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imported_names(tree: ast.AST, *, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import anywhere in `tree`.

    `from X import a` lists `X`, or `X.a` when `X` is the root package: there `a` is the
    subpackage that matters (`from txgate import custody` imports `txgate.custody`)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                resolve_relative(module, is_package=is_package, level=node.level, name=node.module)
                if node.level
                else node.module or ""
            )
            if base != ROOT:
                found.append((node.lineno, base))
            else:
                found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            found.append((node.lineno, name))
    return found


def _dynamic_import(call: ast.Call) -> str | None:
    """The module named by `importlib.import_module("...")` or `__import__("...")`."""
    func = call.func
    named = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if not named or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def check_source(
    source: str, *, module: str, is_package: bool = False, where: str | None = None
) -> list[Violation]:
    """Every import in `source` (the text of `module`) that goes the wrong way."""
    tree = ast.parse(source, filename=where or module)
    violations = []
    for line, target in imported_names(tree, module=module, is_package=is_package):
        rule = broken_rule(module, target)
        if rule is not None:
            violations.append(Violation(where or module, line, target, rule))
    return violations


def module_of(path: Path) -> tuple[str, bool]:
    """Dotted module name of a file under `SRC`, and whether it is a package `__init__`."""
    relative = path.relative_to(SRC).with_suffix("")
    parts = list(relative.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def source_files() -> list[Path]:
    return sorted((SRC / ROOT).rglob("*.py"))


def check_tree() -> list[Violation]:
    violations: list[Violation] = []
    for path in source_files():
        module, is_package = module_of(path)
        where = str(path.relative_to(SRC.parent))
        violations += check_source(
            path.read_text(encoding="utf-8"), module=module, is_package=is_package, where=where
        )
    return violations


# -- the rules hold for the code ---------------------------------------------------------------


def test_imports_point_from_parts_to_foundations() -> None:
    violations = check_tree()
    assert not violations, (
        "imports that break the dependency direction (see docs/architecture.md):\n"
        + "\n".join(f"  {violation}" for violation in violations)
    )


def test_every_package_is_a_foundation_a_part_or_the_cli() -> None:
    packages = {
        f"{ROOT}.{path.stem}"
        for path in (SRC / ROOT).iterdir()
        if (path.is_dir() and (path / "__init__.py").exists())
        or (path.suffix == ".py" and path.name != "__init__.py")
    }
    unknown = sorted(packages - FOUNDATIONS - PARTS - {CLI})
    assert not unknown, (
        f"{', '.join(unknown)}: say whether it is a foundation or a part in "
        "tests/test_architecture.py and docs/architecture.md"
    )


def test_the_checker_sees_every_module() -> None:
    modules = {module_of(path)[0] for path in source_files()}
    assert {CORE, f"{ROOT}.custody.pipeline", f"{CLI}.main"} <= modules


# -- the checker itself finds what it should -----------------------------------------------------

FORBIDDEN = [
    pytest.param(
        "txgate.storage.engine",
        "from txgate.custody.vault import Vault\n",
        "txgate.custody",
        id="foundation-imports-part",
    ),
    pytest.param(
        "txgate.storage.engine",
        "from ..custody import vault\n",
        "txgate.custody",
        id="relative-import",
    ),
    pytest.param(
        "txgate.audit.log",
        "def f():\n    import txgate.wallet.client\n",
        "txgate.wallet",
        id="import-inside-function",
    ),
    pytest.param(
        "txgate.chain.client",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from txgate.cli import main\n",
        "txgate.cli",
        id="type-checking-block",
    ),
    pytest.param(
        "txgate.core.types",
        "from txgate.config import Settings\n",
        "txgate.config",
        id="core-imports-foundation",
    ),
    pytest.param(
        "txgate.custody.api",
        "from txgate.wallet import tracker\n",
        "txgate.wallet",
        id="custody-imports-wallet",
    ),
    pytest.param(
        "txgate.wallet.client",
        "from txgate import custody\n",
        "txgate.custody",
        id="wallet-imports-custody",
    ),
    pytest.param(
        "txgate.relay.hub",
        "from ..custody.events import move\n",
        "txgate.custody",
        id="relay-imports-custody",
    ),
    pytest.param(
        "txgate.custody.service",
        "import importlib\nrelay = importlib.import_module('txgate.relay.ingest')\n",
        "txgate.relay",
        id="dynamic-import",
    ),
    pytest.param(
        "txgate.custody.service",
        "from txgate.cli.common import console\n",
        "txgate.cli",
        id="part-imports-cli",
    ),
]


@pytest.mark.parametrize(("module", "source", "forbidden"), FORBIDDEN)
def test_checker_reports_a_forbidden_import(module: str, source: str, forbidden: str) -> None:
    violations = check_source(source, module=module)
    assert violations, f"the checker missed a forbidden import of {forbidden} in {module}"
    assert all(area(violation.target) == forbidden for violation in violations)
    assert all(violation.line >= 1 and violation.rule for violation in violations)


ALLOWED = [
    pytest.param("txgate.custody.api", "from txgate.storage.tables import Account\n", id="part"),
    pytest.param("txgate.audit.log", "from txgate.storage.tables import AuditHead\n", id="audit"),
    pytest.param("txgate.custody.api", "from . import tokens\nfrom .eca3 import X\n", id="own"),
    pytest.param("txgate.cli.main", "from txgate.custody import api\n", id="cli-wires-parts"),
    pytest.param("txgate.core.types", "import re\nfrom eth_utils import to_bytes\n", id="core"),
]


@pytest.mark.parametrize(("module", "source"), ALLOWED)
def test_checker_allows_imports_that_point_the_right_way(module: str, source: str) -> None:
    assert check_source(source, module=module) == []


def test_relative_imports_resolve_from_the_package() -> None:
    assert resolve_relative("txgate.custody.api", is_package=False, level=1, name="eca3") == (
        "txgate.custody.eca3"
    )
    assert resolve_relative("txgate.custody", is_package=True, level=1, name="vault") == (
        "txgate.custody.vault"
    )
    assert resolve_relative("txgate.custody.api", is_package=False, level=2, name=None) == "txgate"
    with pytest.raises(ValueError, match="beyond the top-level"):
        resolve_relative("txgate.core", is_package=True, level=3, name="x")
