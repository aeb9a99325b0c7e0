"""dev/import_cycles.py: the import-linter contract `make lint` runs against import loops."""

from __future__ import annotations

from grimp import ImportGraph

from dev.import_cycles import NoModuleCyclesContract, module_cycles


def _graph(*imports: tuple[str, str, int, str]) -> ImportGraph:
    graph = ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d", "other", "other.x"):
        graph.add_module(module)
    for importer, imported, line, text in imports:
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=text)
    return graph


def _check(graph: ImportGraph) -> tuple[bool, dict[str, list[str]]]:
    contract = NoModuleCyclesContract(name="no cycles", session_options={}, contract_options={"packages": ["pkg"]})
    result = contract.check(graph, verbose=False)
    return result.kept, result.metadata["cycles"]


def test_a_loop_through_the_package_init_fails_with_the_import_lines() -> None:
    """pkg/__init__.py imports pkg.a, and pkg.a imports a name of pkg inside a function: the loop
    that acyclic_siblings cannot see (pkg is no sibling of pkg.a)."""
    kept, cycles = _check(
        _graph(
            ("pkg", "pkg.a", 3, "from .a import run"),
            ("pkg.a", "pkg", 40, "from . import connect"),
            ("pkg.a", "pkg.b", 5, "from .b import helper"),
        )
    )
    assert not kept
    assert cycles == {
        "pkg, pkg.a": [
            "pkg -> pkg.a (l. 3: from .a import run)",
            "pkg.a -> pkg (l. 40: from . import connect)",
        ]
    }


def test_every_loop_is_reported_once_with_all_its_modules() -> None:
    graph = _graph(
        ("pkg.a", "pkg.b", 1, "from . import b"),
        ("pkg.b", "pkg.sub.d", 1, "from .sub import d"),
        ("pkg.sub.d", "pkg.a", 9, "from .. import a"),
        ("pkg.c", "pkg.a", 1, "from . import a"),  # into the loop, not part of it
    )
    assert module_cycles(graph, {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d"}) == [
        ["pkg.a", "pkg.b", "pkg.sub.d"]
    ]


def test_no_loop_is_kept_and_modules_outside_the_packages_do_not_count() -> None:
    kept, cycles = _check(
        _graph(
            ("pkg", "pkg.a", 1, "from .a import run"),
            ("pkg.a", "pkg.b", 1, "from . import b"),
            ("pkg.b", "other.x", 1, "from other import x"),
            ("other.x", "pkg.a", 1, "from pkg import a"),  # the loop closes outside pkg
        )
    )
    assert kept and cycles == {}
