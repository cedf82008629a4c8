"""The package's own import graph, read from the source (no module is imported): for the test that
keeps data flowing one way, and for the pictures in ``docs/imports/`` (``make imports``: one of the top level
and one per package, each readable at page width) and the whole graph in ``docs/imports.svg``.

Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are left out.
"""

from __future__ import annotations

import ast
import concurrent.futures
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

#: The way data flows, top to bottom (the README's architecture): a module may import modules of its own
#: rank or below, never above. Modules not listed are shared plumbing (settings, errors, logs, models...).
FLOW = (
    ("worker.cli",),
    ("worker.app", "worker.demo", "worker.jobs_cli", "worker.api", "worker.serving", "worker.ui"),
    ("worker.consumer",),
    ("worker.worker_loop",),
    ("worker.dispatch",),
    ("worker.runner",),
    ("worker.connectors",),
    ("worker.sinks",),
)

#: What a crawler's parts (a subpackage of ``worker.connectors``: ``web/``, ``files/``) may import besides their
#: own subpackage: the connector interface and the plumbing below it. Never the job stack, settings, metrics,
#: Redis, the registry, another crawler, or anything else above.
CRAWLER_MAY_IMPORT = frozenset(
    {
        "worker",  # __version__
        "worker.connectors.base",
        "worker.crawlstate",
        "worker.documents",
        "worker.errors",
        "worker.labels",
        "worker.logs",
        "worker.skips",
    }
)


def module_name(path: Path) -> str:
    """``worker/connectors/web/fetch.py`` -> ``worker.connectors.web.fetch``; a package's ``__init__`` is
    the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, here: str, modules: set[str]) -> Iterator[str]:
    """The modules ``here`` imports: ``from pkg import sub`` is ``pkg.sub`` when that is a module, else ``pkg``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking_block(node):
            skip.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = ".".join([*here.split(".")[: -node.level], *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in modules else base


def parse_source(text: str) -> ast.Module:
    """``ast.parse`` on a thread of its own: CPython 3.11 (gh-106905) raises "AST constructor recursion depth
    mismatch" on a thread that has seen a RecursionError before (the test suite provokes one on purpose)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ast.parse, text).result()


def graph() -> dict[str, set[str]]:
    """Each worker module -> the worker modules it imports at run time."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    edges: dict[str, set[str]] = {}
    for path in paths:
        here = module_name(path)
        targets = {name for name in _imports(parse_source(path.read_text()), here, modules) if name in modules}
        edges[here] = targets - {here}
    return edges


def rank(module: str) -> int | None:
    """The module's place in :data:`FLOW` (0 = top), or None for shared plumbing."""
    for i, level in enumerate(FLOW):
        if any(module == name or module.startswith(name + ".") for name in level):
            return i
    return None


def packages() -> list[str]:
    """Every package under ``worker`` (each directory with an ``__init__.py``), the root left out."""
    return sorted(module_name(path) for path in PACKAGE.rglob("__init__.py") if path.parent != PACKAGE)


def crawler(module: str) -> str | None:
    """The crawler subpackage (``worker.connectors.web``) a module belongs to, or None."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["worker", "connectors"] and (PACKAGE / "connectors" / parts[2]).is_dir():
        return ".".join(parts[:3])
    return None


def outside_lower_layers(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a crawler's parts to anything but their own subpackage and :data:`CRAWLER_MAY_IMPORT`."""
    out = []
    for source, targets in edges.items():
        home = crawler(source)
        if home is None:
            continue
        for target in targets:
            if crawler(target) != home and target not in CRAWLER_MAY_IMPORT:
                out.append((source, target))
    return sorted(out)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found (each as the path that closes it); empty when the graph is a DAG."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports that run back up :data:`FLOW` (a lower module importing a higher one)."""
    out = []
    for source, targets in edges.items():
        for target in targets:
            low, high = rank(source), rank(target)
            if low is not None and high is not None and high < low:
                out.append((source, target))
    return sorted(out)


def dot(edges: dict[str, set[str]]) -> str:
    """The graph in Graphviz DOT, arrows pointing down (importer above imported); the modules of
    :data:`FLOW` are shaded."""
    lines = [
        "digraph imports {",
        '  rankdir=TB; newrank=true; node [shape=box, fontsize=10]; edge [color="#00000040", arrowsize=0.5];',
    ]
    for module in sorted(edges):
        label = module.removeprefix("worker.")
        style = ', style=filled, fillcolor="#e8f0fe"' if rank(module) is not None else ""
        lines.append(f'  {_id(module)} [label="{label}"{style}];')
    lines.extend(f"  {_id(s)} -> {_id(t)};" for s in sorted(edges) for t in sorted(edges[s]))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _id(module: str) -> str:
    return module.replace(".", "_")


def _unit(module: str, package: str) -> str:
    """What ``module`` is drawn as in the picture of ``package``: itself inside the package (a subpackage of it
    as one box), else the top-level module or package of ``worker`` it belongs to."""
    prefix = package + "."
    if module.startswith(prefix):
        return prefix + module[len(prefix) :].split(".", maxsplit=1)[0]
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def package_edges(edges: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The graph as the picture of ``package`` shows it: its own modules (subpackages as one box each) and, one
    box each, the modules and packages outside it that they import."""
    inside = [m for m in edges if m.startswith(package + ".") or m == package]
    drawn: dict[str, set[str]] = {}
    for module in inside:
        here = _unit(module, package)
        drawn.setdefault(here, set())
        for target in edges[module]:
            there = _unit(target, package)
            if there != here:
                drawn[here].add(there)
                drawn.setdefault(there, set())
    return drawn


def spine(drawn: dict[str, set[str]]) -> str:
    """The top-level picture: the modules and packages of :data:`FLOW` with their arrows, and the shared
    plumbing (everything else, which any of them may import) named in one box instead of 40 arrows to it."""
    flow = {m: {t for t in targets if rank(t) is not None} for m, targets in drawn.items() if rank(m) is not None}
    plumbing = sorted(m.removeprefix("worker.") for m in drawn if rank(m) is None and m != "worker")
    text = dot(flow).rstrip().removesuffix("}")
    rows = [", ".join(plumbing[i : i + 6]) for i in range(0, len(plumbing), 6)]
    label = "shared plumbing (imported from any level):\\n" + "\\n".join(rows)
    return text + f'  plumbing [label="{label}", shape=note, fontsize=9];\n}}\n'


def pictures(edges: dict[str, set[str]]) -> dict[str, str]:
    """File name -> DOT text of every picture in ``docs/imports/``: ``worker.dot`` (top-level modules, each
    package one box) and one per package, each small enough to read at page width."""
    out = {"worker.dot": spine(package_edges(edges, "worker"))}
    for package in packages():
        out[f"{package.removeprefix('worker.')}.dot"] = dot(package_edges(edges, package))
    return out


def write_pictures(folder: Path) -> None:
    """Write :func:`pictures` into ``folder`` (the SVGs are rendered from them by ``make imports``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.dot"):
        stale.unlink()
    for name, text in pictures(graph()).items():
        (folder / name).write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        write_pictures(Path(sys.argv[2]))
    else:
        sys.stdout.write(dot(graph()))
