"""The package's import graph has no circle and never imports from a lower layer into a higher one.

Read from the source with `ast` (nothing is imported): every `import` and `from ... import` in a module, at
module level and inside functions, relative imports resolved. `from pkg import name` is an import of the
submodule `pkg.name` when there is one, else of `pkg`. Modules loaded by name through `importlib` (the CLI's
plugin commands, the model registry) are not followed. Importing `pkg.sub` runs `pkg/__init__.py` too, but
that is Python's doing, not an arrow of the code: a package face may import its own modules, and they import
each other, never the face.

The layers, bottom-up, are the life of a row: the ground (errors, defaults, logging, device, ...), reading
data, thresholds, models, the reports of a detection, the files on disk (store layout, result files), the specs, the detector, the model store, the service,
the command line, the servers, and the package's faces. A module may import from its own layer and any layer
below. Every module is assigned a layer by hand below: a new module fails `test_every_module_has_a_layer`
until it is given one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "anomaly"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: list[tuple[str, list[str]]] = [
    ("ground", [
        "anomaly._version", "anomaly.errors", "anomaly.defaults", "anomaly.logs", "anomaly.device", "anomaly.period",
        "anomaly.metrics", "anomaly.jsonsafe", "anomaly.memory", "anomaly.limits", "anomaly.synthetic",
        "anomaly.events", "anomaly.workers", "anomaly.prefetch", "anomaly.loadchecks", "anomaly.files",
        "anomaly.attribution", "anomaly.window_choice",
    ]),
    ("data", [
        "anomaly.data", "anomaly.data.rawfile", "anomaly.data.csvread", "anomaly.data.sniffing", "anomaly.data.table",
    ]),
    ("thresholds", [
        "anomaly.thresholds", "anomaly.thresholds.methods", "anomaly.thresholds.policy",
        "anomaly.thresholds.rolling",
    ]),
    ("models", [
        "anomaly.models", "anomaly.models.dense", "anomaly.models.lstm", "anomaly.models.pca",
        "anomaly.models.transformer", "anomaly.models.vae", "anomaly.scoring", "anomaly.smoothing", "anomaly.training",
        "anomaly.baselines",
    ]),
    ("reports", [
        "anomaly.incidents", "anomaly.summary", "anomaly.plotting",
    ]),
    ("files", [
        "anomaly.store", "anomaly.output",
    ]),
    ("specs", [
        "anomaly.specs",
    ]),
    ("detector", [
        "anomaly.detector", "anomaly.detector.core", "anomaly.detector.estimator", "anomaly.detector.scaling",
        "anomaly.detector.artifacts", "anomaly.detector.stream",
    ]),
    ("store", [
        "anomaly.loader",
    ]),
    ("service", [
        "anomaly.service", "anomaly.service.operations", "anomaly.service.pipeline", "anomaly.service.live",
        "anomaly.fleet_series", "anomaly.fleet_run", "anomaly.fleet",
    ]),
    ("cli", [
        "anomaly.cli", "anomaly.cli.commands", "anomaly.cli.fleet", "anomaly.cli.threshold", "anomaly.cli.evaluate",
        "anomaly.cli.evaluate_outputs", "anomaly.cli.evaluate_report", "anomaly.__main__",
    ]),
    ("server", [
        "anomaly.server", "anomaly.server.security", "anomaly.server.settings", "anomaly.server.core",
        "anomaly.server.toolbox", "anomaly.server.uploads", "anomaly.server.mcp_common", "anomaly.server.mcp_app",
        "anomaly.server.fleet_tools", "anomaly.server.http_api", "anomaly.server.live", "anomaly.server.web",
        "anomaly.server.app", "anomaly.server.serve", "anomaly.server.stdio", "anomaly.inprocess",
    ]),
    # What users import by name: the package face and the old names kept for them. Nothing inside imports these.
    ("faces", [
        "anomaly", "anomaly.estimator", "anomaly.settings",
    ]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def closest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                hit = closest(target)
                if hit and hit != name:
                    found.add(hit)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_of() -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            assert name not in out, f"{name} is assigned to two layers"
            out[name] = i
    return out


def test_the_walk_sees_function_level_and_relative_imports():
    edges = graph()
    assert "anomaly.errors" in edges["anomaly.thresholds.methods"]  # `from ..errors import DataError`
    assert "anomaly.data" in edges["anomaly.thresholds.methods"]  # inside load_labels: `from .. import data`
    assert "anomaly.specs" in edges["anomaly.detector.core"]  # inside _check_training_args


def test_every_module_has_a_layer():
    assigned = layer_of()
    missing = sorted(set(modules()) - set(assigned))
    assert not missing, (f"assign these modules to a layer in LAYERS of {Path(__file__).name}: {', '.join(missing)}")
    gone = sorted(set(assigned) - set(modules()))
    assert not gone, f"LAYERS names modules that no longer exist: {', '.join(gone)}"


def test_no_import_circles():
    found = cycles(graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    layer = layer_of()
    names = [n for n, _ in LAYERS]
    up = [f"{a} ({names[layer[a]]}) imports {b} ({names[layer[b]]})"
          for a, targets in sorted(graph().items()) for b in sorted(targets)
          if a in layer and b in layer and layer[b] > layer[a]]
    assert not up, "imports that run up a layer:\n" + "\n".join(up)
