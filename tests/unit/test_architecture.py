"""The code's shape, as docs/architecture.md states it: one-way arrows, no cycles, short files.

Read from the source with :mod:`ast` (nothing is imported), so a violation is named by file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Which parts each part may import (docs/architecture.md draws the same arrows).
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "client": set(),
    "deploy": {"client"},
    "training": {"client"},
    "export": {"client", "training"},
    "loadtest": {"client", "deploy", "export", "training"},
    "ser": {"client", "deploy", "export", "training", "loadtest"},
}
PARTS = tuple(ALLOWED_IMPORTS)

#: A file longer than this states why at its top, in a line holding LONG_FILE_MARK.
MAX_LINES = 500
LONG_FILE_MARK = "Why this file is long:"

#: Libraries the client (what calling services install) must not import when it is imported.
HEAVY_LIBRARIES = {"torch", "transformers", "onnx", "onnxruntime", "locust", "librosa", "sklearn", "matplotlib"}


@dataclass(frozen=True)
class Import:
    """One import statement: the importing file and line, the imported module, names, and whether lazy."""

    path: Path
    line: int
    module: str
    names: tuple[str, ...]
    lazy: bool  # inside a function (runs when called), or under ``if TYPE_CHECKING``


def _sources() -> list[Path]:
    files = []
    for part in PARTS:
        files += [p for p in sorted((ROOT / part).rglob("*.py"))
                  if "examples" not in p.relative_to(ROOT).parts and "__pycache__" not in p.parts]
    return files


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> list[Import]:
    """Every import in ``path``; relative ones resolved against ``module`` (default: the file's own name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                child_lazy = True
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(path, child.lineno, alias.name, (), lazy))
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([module] if module else []))
                found.append(Import(path, child.lineno, module, tuple(a.name for a in child.names), lazy))
            visit(child, child_lazy)

    visit(tree, False)
    return found


SOURCES = _sources()
IMPORTS = {path: _imports(path) for path in SOURCES}
MODULES = {_module_name(p) for p in SOURCES}


def _resolve(module: str, names: tuple[str, ...], modules: set[str]) -> set[str]:
    """The bundle modules an import statement loads (``from pkg import mod`` loads ``pkg.mod``)."""
    out = {module} if module in modules else set()
    out |= {f"{module}.{n}" for n in names if f"{module}.{n}" in modules}
    return out


def arrow_violations(imports: dict[Path, list[Import]]) -> list[str]:
    """``file:line (part) imports module`` for each import against :data:`ALLOWED_IMPORTS`."""
    wrong = []
    for path, found in imports.items():
        part = path.relative_to(ROOT).parts[0]
        for imp in found:
            target = imp.module.split(".")[0]
            if target in PARTS and target != part and target not in ALLOWED_IMPORTS[part]:
                wrong.append(f"{path.relative_to(ROOT)}:{imp.line} ({part}) imports {imp.module}")
    return wrong


def private_violations(imports: dict[Path, list[Import]]) -> list[str]:
    """``file:line imports _name from module`` for each private name taken from another module."""
    return [f"{path.relative_to(ROOT)}:{imp.line} imports {name} from {imp.module}"
            for path, found in imports.items() for imp in found for name in imp.names
            if name.startswith("_") and not name.startswith("__") and imp.module != "__future__"]


def import_cycles(imports: dict[Path, list[Import]], modules: set[str]) -> list[str]:
    """``a -> b -> a`` for each cycle among the imports that run when a module is imported."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path, found in imports.items():
        me = _module_name(path)
        for imp in found:
            if not imp.lazy:
                graph[me] |= _resolve(imp.module, imp.names, modules) - {me}
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])
    return cycles


def long_files(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file: N lines`` for each file over :data:`MAX_LINES` without :data:`LONG_FILE_MARK` in its first 40 lines."""
    out = []
    for path in paths:
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_LINES and LONG_FILE_MARK not in "\n".join(text.splitlines()[:40]):
            out.append(f"{path.relative_to(root)}: {lines} lines")
    return out


def test_the_source_tree_is_found() -> None:
    assert len(SOURCES) > 50
    assert {"client.errors", "export.errors", "training.errors", "ser.cli"} <= MODULES


def test_parts_import_only_the_parts_below_them() -> None:
    wrong = arrow_violations(IMPORTS)
    assert not wrong, "imports against the arrows of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_import_cycle_at_import_time() -> None:
    cycles = import_cycles(IMPORTS, MODULES)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_imports_another_modules_private_name() -> None:
    wrong = private_violations(IMPORTS)
    assert not wrong, "\n".join(wrong)


def test_long_files_say_why_at_their_top() -> None:
    long = long_files(SOURCES)
    assert not long, f"files over {MAX_LINES} lines without '{LONG_FILE_MARK}' at their top:\n" + "\n".join(long)


def test_the_client_imports_no_heavy_library_when_imported() -> None:
    wrong = [f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module}"
             for path, found in IMPORTS.items() if path.relative_to(ROOT).parts[0] == "client"
             for imp in found if not imp.lazy and imp.module.split(".")[0] in HEAVY_LIBRARIES]
    assert not wrong, "\n".join(wrong)


#: What the repository writer copies beside the portable model file (export/served/window_model.py).
COPIED_BESIDE_THE_SERVED_MODEL = {"export.cpu_class"}


def test_the_portable_model_file_imports_only_what_is_copied_beside_it() -> None:
    served = ROOT / "export" / "served" / "window_model.py"
    wrong = [f"line {imp.line}: {imp.module}" for imp in IMPORTS[served]
             if imp.module.split(".")[0] in PARTS and imp.module not in COPIED_BESIDE_THE_SERVED_MODEL]
    assert not wrong, f"{served.name} runs in model repositories without the bundle: " + ", ".join(wrong)
    copied = (ROOT / "export" / "repository" / "write.py").read_text()
    for module in COPIED_BESIDE_THE_SERVED_MODEL:
        assert f'"{module.rpartition(".")[2]}.py"' in copied, f"the repository writer does not copy {module}"


def test_the_checks_see_planted_violations(tmp_path: Path) -> None:
    """Each check above fails on a violation planted in a copy of the tree's shape (none is vacuous)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from export.pipeline import run\nfrom client.audio import _hidden\n")
    as_training = ROOT / "training" / "probe.py"  # read as if it were training/probe.py
    planted = {as_training: [Import(as_training, i.line, i.module, i.names, i.lazy)
                             for i in _imports(probe, "training.probe")]}
    assert arrow_violations(planted) == ["training/probe.py:1 (training) imports export.pipeline"]
    assert private_violations(planted) == ["training/probe.py:2 imports _hidden from client.audio"]

    a, b = ROOT / "training" / "a.py", ROOT / "training" / "b.py"
    loop = {a: [Import(a, 1, "training.b", (), False)], b: [Import(b, 1, "training", ("a",), False)]}
    assert import_cycles(loop, {"training", "training.a", "training.b"}) == ["training.a -> training.b -> training.a"]
    lazy = {a: [Import(a, 1, "training.b", (), False)], b: [Import(b, 1, "training.a", (), True)]}
    assert import_cycles(lazy, {"training.a", "training.b"}) == []

    long = tmp_path / "long.py"
    long.write_text("x = 1\n" * (MAX_LINES + 1))
    justified = tmp_path / "justified.py"
    justified.write_text(f'"""{LONG_FILE_MARK} one table."""\n' + "x = 1\n" * (MAX_LINES + 1))
    assert long_files([long, justified], root=tmp_path) == [f"long.py: {MAX_LINES + 1} lines"]
