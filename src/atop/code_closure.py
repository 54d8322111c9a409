"""Which source files a ``python -m atop <command>`` job runs, and a hash of them.

Snakemake tracks a rule's shell text, not the modules it imports, and DVC tracks
files. Both front doors must agree on what a source edit reruns, so the set of
files behind a command is computed once, here, from the syntax trees (no import):
the CLI function of the command, the cli helpers it calls, and every ``atop``
module they import, transitively. dvc_pipeline lists these files as a stage's deps;
the rules hand their hash to each job as a param, so Snakemake reruns the jobs
whose code changed (and only those).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

CLI = "src/atop/cli.py"


class ClosureError(RuntimeError):
    """A command has no CLI function; the message names it."""


def cli_command_modules(repo: Path, command: str) -> set[str]:
    """The atop modules imported by the CLI function behind ``python -m atop <command>``."""
    functions = {
        node.name: node for node in ast.parse((repo / CLI).read_text()).body if isinstance(node, ast.FunctionDef)
    }
    entry = "cmd_" + command.replace("-", "_")
    if entry not in functions:
        raise ClosureError(f"{CLI} has no {entry}() for `python -m atop {command}`")
    # the command and the cli helpers it calls (_setup, _checkpoint_meta, ...), transitively
    reached, pending = set(), [entry]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        pending += [
            node.func.id
            for node in ast.walk(functions[name])
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions
        ]
    return set().union(*(_imports(functions[name], "atop.cli") for name in reached))


def _imports(tree: ast.AST, module: str) -> set[str]:
    """Absolute names of the atop modules a syntax tree imports (``from .x import y`` included)."""
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.split(".")[0] == "atop":
                found.add(name)
                found |= {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "atop"}
    return found


def _module_file(repo: Path, name: str) -> Path | None:
    base = repo / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_closure(repo: Path, roots: set[str]) -> list[str]:
    """Source files of the given atop modules and of everything they import, transitively."""
    seen: dict[str, Path] = {}
    pending = list(roots | {"atop", "atop.__main__", "atop.cli"})
    while pending:
        name = pending.pop()
        path = _module_file(repo, name)
        if path is None or name in seen:
            continue
        seen[name] = path
        # importing atop.x.y runs atop/__init__.py and atop/x/__init__.py first
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        module = name if path.name != "__init__.py" else f"{name}.__init__"
        tree = ast.parse(path.read_text())
        if name == "atop.cli":  # its commands import lazily: only the module level counts
            tree = ast.Module(body=[node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))])
        pending += parents + sorted(_imports(tree, module))
    return sorted(str(path.relative_to(repo)) for path in set(seen.values()))


@functools.cache
def command_code_version(repo: Path, *commands: str) -> str:
    """sha256 (first 16 hex digits) over the source files behind ``python -m atop <command>``."""
    repo = Path(repo)
    modules = set().union(*(cli_command_modules(repo, command) for command in commands))
    digest = hashlib.sha256()
    for path in module_closure(repo, modules):
        digest.update(path.encode() + b"\0" + (repo / path).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
