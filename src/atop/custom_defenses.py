"""Bring your own defense: the config's ``custom_defenses`` entries, checked before any job runs.

An entry names a factory (``path/to/file.py:function`` relative to the workflow, or
``package.module:function`` on the Python path) that returns an ``nn.Module`` taking [0, 1]
images (N, C, H, W) to logits (N, classes). It is called as
``factory(classifier=..., weights=..., **params)``: ``classifier`` is this project's trained
classifier of the seed when the entry names one (``standard`` or ``adversarial``), else None;
``weights`` the state dict of ``weights.path`` (loaded with ``weights_only=True``, its sha256
checked), else None. ``randomized`` declares whether two forward passes of one image may differ;
the defense check job (``python -m atop check-defense``) refuses a declaration the module
contradicts, a wrong output shape, non-finite logits or a module without input gradients, before
the evaluation jobs start.

The defense is named ``custom-<name>`` (bare ``custom`` when there is one entry) in
``evaluation.defenses``, like ``ap-<variant>``. Torch-free: the Snakefile and ``python -m
atop.config`` read it; what needs torch is in ``defense.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from .defense_kinds import split_defense
from .errors import ConfigError
from .io import sha256_file

SECTION = "custom_defenses"
_FACTORY = re.compile(r"^(?P<source>[^:\s]+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Factory:
    source: str  # a .py file (relative to the workflow's folder) or a dotted module name
    function: str

    @property
    def is_file(self) -> bool:
        return self.source.endswith(".py")

    def path(self, root: Path) -> Path | None:
        """The factory's file (a module found on the Python path included), or None when none is found."""
        if self.is_file:
            return Path(root) / self.source
        try:
            spec = importlib.util.find_spec(self.source)
        except (ImportError, ValueError):
            return None
        return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in") else None


def parse_factory(text: str, key: str) -> Factory:
    match = _FACTORY.match(text or "")
    if match is None:
        raise ConfigError(
            f"{key}: {text!r} is not 'file.py:function' or 'package.module:function' (e.g. 'examples/median.py:build')"
        )
    return Factory(match["source"], match["function"])


def entry(config: dict, defense: str) -> dict:
    """The ``custom_defenses`` entry behind ``custom-<name>`` (bare ``custom``: the only one)."""
    _, name = split_defense(defense)
    entries = config.get(SECTION) or {}
    if name is None:
        if len(entries) != 1:
            raise ConfigError(f"defense {defense!r} needs exactly one entry in {SECTION} (there are {len(entries)})")
        name = next(iter(entries))
    if name not in entries:
        raise ConfigError(f"defense {defense!r}: {name!r} is not in {SECTION} ({', '.join(entries) or 'none'})")
    return {"name": name, **entries[name]}


def files(config: dict, defense: str, root: Path) -> dict[str, str]:
    """The files a custom defense's jobs read (its factory's file, its weights), as job inputs."""
    spec = entry(config, defense)
    found = {}
    factory_path = parse_factory(spec["factory"], f"{SECTION}.{spec['name']}.factory").path(root)
    if factory_path is not None and Path(root) in Path(factory_path).resolve().parents:
        found["factory"] = str(Path(factory_path).resolve().relative_to(Path(root).resolve()))
    if spec.get("weights"):
        found["weights"] = spec["weights"]["path"]
    return found


def check_custom_defenses(config: dict, root: Path) -> None:
    """What can be known without torch: the factory's file and function exist, the weights match their sha256."""
    for name, spec in (config.get(SECTION) or {}).items():
        key = f"{SECTION}.{name}"
        factory = parse_factory(spec.get("factory", ""), f"{key}.factory")
        path = factory.path(root)
        if path is None or not Path(path).is_file():
            where = f"{Path(root) / factory.source}" if factory.is_file else "on the Python path"
            raise ConfigError(f"{key}.factory: {factory.source!r} is not found ({where})")
        try:
            tree = ast.parse(Path(path).read_text(), filename=str(path))
        except SyntaxError as error:
            raise ConfigError(f"{key}.factory: {path} does not parse: line {error.lineno}: {error.msg}") from None
        defined = {
            node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        } | {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        if factory.function not in defined:
            raise ConfigError(
                f"{key}.factory: {path} defines no {factory.function!r} at its top level"
                f" (it defines: {', '.join(sorted(defined)) or 'nothing'})"
            )
        weights = spec.get("weights")
        if weights:
            weights_path = Path(root) / weights["path"]
            if not weights_path.is_file():
                raise ConfigError(f"{key}.weights.path: {weights_path} does not exist")
            actual = sha256_file(weights_path)
            if actual != weights["sha256"]:
                raise ConfigError(f"{key}.weights.sha256: {weights_path} has sha256 {actual}, not {weights['sha256']}")
