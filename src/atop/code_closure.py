"""Which source files a ``python -m atop <command>`` job runs, and a hash of them.

Snakemake tracks a rule's shell text, not the modules it imports, and DVC tracks
files. Both front doors must agree on what a source edit reruns, so the set of
files behind a job is computed once, here, from the syntax trees (no import).
tools/dvc_pipeline.py lists these files as a stage's deps; the rules hand their hash to each
job as a param, so Snakemake reruns the jobs whose code changed (and only those).

The closure follows what a job can run, at the level of a module's top-level
functions and classes ("units"):

- importing a module runs its module-level statements (and its packages'
  ``__init__``), so their imports count, with the decorators, default values and
  base classes of its functions and classes, and every decorated function or class
  (a registry entry, reached through its registry);
- a function or class counts when something that counts names it: an import of it,
  or a reference from a unit of its own module. Its body then counts, with the
  imports inside it (lazy imports). A module imported as a value (``import atop.x``,
  ``from . import x``) counts whole;
- the entry is ``atop.cli``'s module level (``main`` and what it names) plus the command's
  own module, ``atop.commands.<command>`` (dashes as underscores), whole: ``main`` imports
  that module alone, by a run-time name, never the other commands' modules;
- attack builders (functions registered with ``@register_attack("<name>")`` in
  ``atop.attacks``) are reached by attack name only: by a literal
  ``build_attack("<name>", ...)`` call in code that counts (the overfitting monitor's
  FGSM and PGD), and by the attacks the job runs (``attacks=``: the evaluation's, the
  diagnostics' attack). A job that builds an attack by a run-time name and is given
  no attack names gets every builder.

So training, whose overfitting monitor builds FGSM and PGD, runs ``attacks/eot.py``
but not StAdv, BPDA or AutoAttack's modules; an evaluation job of one attack runs
that attack's modules; an edit of another attack's module reruns neither.
Everything in a file that counts is hashed, so an edit anywhere in it reruns the job.
``if TYPE_CHECKING:`` and ``if __name__ == "__main__":`` blocks never run on import and never count
(``python -m atop.config``, DVC's first stage, counts its module whole).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

CLI = "src/atop/cli.py"
CLI_MODULE = "atop.cli"
COMMAND_REGISTRY = "COMMANDS"  # atop.cli's tuple of command names
COMMANDS_PACKAGE = "atop.commands"  # one module per command
ATTACKS_MODULE = "atop.attacks"
ATTACK_DECORATOR = "register_attack"
ATTACK_BUILDER_CALL = "build_attack"
# What every `python -m atop <command>` runs before the command's module.
ENTRY_MODULES = ("atop", "atop.__main__", CLI_MODULE)


class ClosureError(RuntimeError):
    """A command is not in the CLI's registry or has no module, or an attack has no builder; the message names it."""


def cli_command_modules(repo: Path, command: str) -> set[str]:
    """The atop modules (and names in them) a ``python -m atop <command>`` job imports after ``atop.cli``:
    its command's module and what its ``run`` imports, directly or in the functions it calls there and in
    the commands' shared modules (benchmarks/startup.py imports them to time a job's start-up)."""
    repo = Path(repo)
    entry = _command_module(repo, command)
    found, reached, pending = {entry}, set(), [(entry, "run")]
    while pending:
        unit = pending.pop()
        if unit in reached:
            continue
        reached.add(unit)
        module = _parse(repo, unit[0])
        imported = {
            alias.asname or alias.name: _absolute(node, module)
            for node in module.tree.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        for node in ast.walk(module.top[unit[1]]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if name in module.functions:
                    pending.append((module.name, name))
                elif imported.get(name, "").startswith(COMMANDS_PACKAGE + "."):  # a shared helper
                    helpers = _parse(repo, imported[name])
                    if helpers is not None and name in helpers.functions:
                        pending.append((helpers.name, name))
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module)
                if base.split(".")[0] == "atop":
                    found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "atop"}
    return found


@dataclass
class _Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    top: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    functions: set[str] = field(default_factory=set)
    decorated: set[str] = field(default_factory=set)  # registry entries: counted with the module
    bound: set[str] = field(default_factory=set)  # every name the module level binds
    builders: dict[str, str] = field(default_factory=dict)  # attack name -> builder function
    # unit -> the nodes of it _Closure.follow acts on (imports, names of this module's top-level units,
    # attack builds): found once per parsed module, not once per command's closure
    edges: dict[str | None, list[ast.AST]] = field(default_factory=dict, repr=False)

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rsplit(".", 1)[0]

    def edges_of(self, unit: str | None) -> list[ast.AST]:
        if unit not in self.edges:
            roots = _module_level(self) if unit is None else [self.top[unit]]
            self.edges[unit] = [
                node
                for root in roots
                for node in ast.walk(root)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                or (isinstance(node, ast.Name) and node.id in self.top and node.id != unit)
                or (isinstance(node, ast.Call) and _called_name(node) == ATTACK_BUILDER_CALL and node.args)
            ]
        return self.edges[unit]


def _module_file(repo: Path, name: str) -> Path | None:
    base = repo / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_file(repo: Path, name: str) -> str | None:
    """The source file of atop module ``name``, relative to ``repo``; None if there is none."""
    path = _module_file(Path(repo), name)
    return None if path is None else str(path.relative_to(repo))


def _parse(repo: Path, name: str) -> _Module | None:
    path = _module_file(repo, name)
    if path is None:
        return None
    stat = path.stat()
    return _parse_file(path, name, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=512)
def _parse_file(path: Path, name: str, _mtime_ns: int, _size: int) -> _Module:
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _Module(name=name, path=path, is_package=path.name == "__init__.py", tree=tree)
    for statement in _module_level(module):
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                module.bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                module.bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module.bound.add(node.name)
            module.top[node.name] = node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module.functions.add(node.name)
            attack = _registered_attack(node)
            if attack is not None:
                module.builders[attack] = node.name
            elif node.decorator_list:
                module.decorated.add(node.name)
    return module


def _registered_attack(node: ast.AST) -> str | None:
    """The attack name of a ``@register_attack("<name>", ...)`` builder, else None."""
    for decorator in getattr(node, "decorator_list", []):
        if (
            isinstance(decorator, ast.Call)
            and _called_name(decorator) == ATTACK_DECORATOR
            and decorator.args
            and isinstance(decorator.args[0], ast.Constant)
            and isinstance(decorator.args[0].value, str)
        ):
            return decorator.args[0].value
    return None


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _absolute(node: ast.ImportFrom, module: _Module) -> str:
    if not node.level:
        return node.module or ""
    parts = module.package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _never_runs_on_import(statement: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` and ``if __name__ == "__main__":`` blocks (a module run with
    ``python -m`` counts whole: module_closure)."""
    if not isinstance(statement, ast.If):
        return False
    test = statement.test
    if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    ):
        return True
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _module_level(module: _Module) -> list[ast.AST]:
    """What importing ``module`` runs: every statement but function and class bodies, and their
    decorators, defaults and bases."""
    nodes: list[ast.AST] = []
    for statement in module.tree.body:
        if _never_runs_on_import(statement):
            continue
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes += statement.decorator_list + statement.args.defaults
            nodes += [default for default in statement.args.kw_defaults if default is not None]
        elif isinstance(statement, ast.ClassDef):
            nodes += statement.decorator_list + statement.bases + statement.keywords
        else:
            nodes.append(statement)
    return nodes


def _command_module(repo: Path, command: str) -> str:
    """The module behind ``python -m atop <command>``: a command of atop.cli's registry."""
    cli = _parse(repo, CLI_MODULE)
    registry = next(
        (
            statement.value
            for statement in (cli.tree.body if cli is not None else [])
            if isinstance(statement, ast.Assign)
            and any(isinstance(target, ast.Name) and target.id == COMMAND_REGISTRY for target in statement.targets)
        ),
        None,
    )
    if registry is None:
        raise ClosureError(f"{CLI} has no {COMMAND_REGISTRY} (the commands `python -m atop` runs)")
    if command not in ast.literal_eval(registry):
        raise ClosureError(f"{CLI} lists no command {command!r} in {COMMAND_REGISTRY} (`python -m atop {command}`)")
    name = f"{COMMANDS_PACKAGE}.{command.replace('-', '_')}"
    if _module_file(repo, name) is None:
        raise ClosureError(f"`python -m atop {command}` has no module {name}")
    return name


class _Closure:
    """The units (module, top-level name; None: the module level) a job reaches, grown to a fixpoint."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.modules: dict[str, _Module] = {}
        self.units: set[tuple[str, str | None]] = set()
        self.pending: list[tuple[str, str | None]] = []
        self.attacks: set[str] = set()  # attack names built by a literal build_attack("<name>")
        self.dynamic = False  # some code builds an attack by a run-time name

    def module(self, name: str) -> _Module | None:
        if name not in self.modules:
            parsed = _parse(self.repo, name)
            if parsed is None:
                return None
            self.modules[name] = parsed
        return self.modules[name]

    def reach_module(self, name: str, whole: bool = False) -> bool:
        """Import ``name`` (its packages first); ``whole``: used as a value, every unit counts."""
        module = self.module(name)
        if module is None:
            return False
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            self.reach(".".join(parts[:i]), None)
        if whole:
            for unit in module.top:
                if unit not in module.builders.values():
                    self.reach(name, unit)
        return True

    def reach(self, module_name: str, unit: str | None) -> None:
        if (module_name, unit) in self.units:
            return
        self.units.add((module_name, unit))
        self.pending.append((module_name, unit))
        if unit is None:
            module = self.module(module_name)
            for name in sorted(module.decorated):
                self.reach(module_name, name)

    def grow(self) -> None:
        while self.pending:
            module_name, unit = self.pending.pop()
            module = self.modules[module_name]
            for node in module.edges_of(unit):
                self.follow(module, unit, node)

    def follow(self, module: _Module, unit: str | None, node: ast.AST) -> None:
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            if base.split(".")[0] != "atop" or not self.reach_module(base):
                return
            imported = self.modules[base]
            for alias in node.names:
                if alias.name == "*":
                    self.reach_module(base, whole=True)
                elif self.reach_module(f"{base}.{alias.name}", whole=True):  # a submodule, as a value
                    continue
                elif alias.name in imported.top:
                    self.reach(base, alias.name)
                elif alias.name not in imported.bound and "__getattr__" in imported.top:  # PEP 562 lazy name
                    self.reach(base, "__getattr__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "atop":
                    self.reach_module(alias.name, whole=True)
        elif isinstance(node, ast.Name) and node.id in module.top and node.id != unit:
            self.reach(module.name, node.id)
        elif isinstance(node, ast.Call) and _called_name(node) == ATTACK_BUILDER_CALL and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self.attacks.add(first.value)
            else:
                self.dynamic = True

    def add_attacks(self, names) -> None:
        registry = self.module(ATTACKS_MODULE)
        builders = registry.builders if registry is not None else {}
        unknown = sorted(set(names) - set(builders))
        if unknown:
            raise ClosureError(f"no attack builder registered as {unknown} in {ATTACKS_MODULE}")
        self.reach_module(ATTACKS_MODULE)
        for name in names:
            self.reach(ATTACKS_MODULE, builders[name])

    def files(self) -> list[str]:
        return sorted({str(self.modules[name].path.relative_to(self.repo)) for name, _ in self.units})


def command_closure(repo: Path, command: str, attacks: tuple[str, ...] | None = None) -> list[str]:
    """Source files (relative to ``repo``) a ``python -m atop <command>`` job runs.

    ``attacks``: the attack methods (registry names) the job runs by a run-time name; None:
    every registered attack, if the command builds any by a run-time name.
    """
    repo = Path(repo)
    entry = _command_module(repo, command)
    closure = _Closure(repo)
    for name in ENTRY_MODULES:
        closure.reach_module(name)
    closure.reach_module(entry, whole=True)  # main() imports it by a run-time name
    closure.grow()
    if attacks:
        closure.add_attacks(attacks)
    done: set[str] = set()
    while True:
        closure.grow()
        wanted = set(closure.attacks)
        if closure.dynamic and attacks is None:
            registry = closure.module(ATTACKS_MODULE)
            wanted |= set(registry.builders) if registry is not None else set()
        if wanted <= done:
            return closure.files()
        closure.add_attacks(sorted(wanted - done))
        done |= wanted


def module_closure(repo: Path, module: str) -> list[str]:
    """Source files ``python -m <module>`` runs: the module whole and the atop modules it reaches."""
    closure = _Closure(Path(repo))
    if not closure.reach_module(module, whole=True):
        raise ClosureError(f"no module {module} under src/")
    closure.grow()
    return closure.files()


def stage_closure(repo: Path, commands) -> list[str]:
    """The files any job of the given commands may run (every attack): a DVC stage's source deps."""
    return sorted(set().union(*(command_closure(repo, command) for command in commands)))


@functools.cache
def command_code_version(repo: Path, command: str, attacks: tuple[str, ...] | None = None) -> str:
    """sha256 (first 16 hex digits) over the source files a ``python -m atop <command>`` job runs."""
    repo = Path(repo)
    digest = hashlib.sha256()
    for path in command_closure(repo, command, attacks):
        digest.update(path.encode() + b"\0" + (repo / path).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
