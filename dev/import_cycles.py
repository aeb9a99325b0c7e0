"""An import-linter contract: no import cycle among the modules of some packages, ``__init__`` included.

import-linter's own ``acyclic_siblings`` compares the modules that sit side by side in a package;
a package's ``__init__`` is not one of its children, so a loop through it (``pkg/__init__.py``
imports ``pkg.a``, which imports a name from ``pkg``) passes that contract. This one looks at every
module of the packages, ``__init__`` modules too, and reports each loop with the import lines that
close it. grimp's graph holds imports at any depth (inside functions too). ``.importlinter``
registers it as ``contract_types = no_module_cycles: dev.import_cycles.NoModuleCyclesContract``.
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def module_cycles(graph: ImportGraph, modules: set[str]) -> list[list[str]]:
    """The import loops among ``modules``: each strongly connected component of two or more
    modules (Tarjan's algorithm), sorted, so a report names every module of each loop once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return sorted(found)


class NoModuleCyclesContract(Contract):
    """``packages``: the packages whose modules (all descendants and the packages themselves) must
    not import one another in a loop."""

    type_name = "no_module_cycles"
    packages = fields.SetField(subfield=fields.ModuleField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        modules: set[str] = set()
        for package in self.packages:  # type: ignore[attr-defined]  # set by Contract from the field
            modules |= {package.name} | graph.find_descendants(package.name)
        cycles = module_cycles(graph, modules)
        details = {
            ", ".join(cycle): [
                f"{importer} -> {imported} (l. {d['line_number']}: {d['line_contents']})"
                for importer in cycle
                for imported in sorted(graph.find_modules_directly_imported_by(importer) & set(cycle))
                for d in graph.get_import_details(importer=importer, imported=imported)
            ]
            for cycle in cycles
        }
        return ContractCheck(kept=not cycles, warnings=None, metadata={"cycles": details})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle, imports in check.metadata["cycles"].items():
            output.print_error(f"Import cycle among: {cycle}")
            for line in imports:
                output.print(f"  {line}")
            output.new_line()
