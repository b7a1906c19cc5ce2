"""The repository's own files a module imports, followed transitively, read from the source (nothing is run)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = ("xsumtune", "stages")


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from a import b`: b may be a module
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name.split(".")[0] in OWN}


def library_files(module: str) -> list[str]:
    """Paths (relative to the root) of every own file importing `module` runs, packages' __init__ included
    unless it is a docstring alone."""
    seen, todo = set(), [module]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += imported_names(path)
    return sorted(str(path.relative_to(ROOT)) for path in seen if path.name != "__init__.py"
                  or len(ast.parse(path.read_text(encoding="utf-8")).body) > 1)
