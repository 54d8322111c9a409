"""torchattacks with only the attacks the jobs use imported (about 1 s less start-up per attack job).

``import torchattacks`` runs its ``__init__``, which imports every attack it ships; two of them
(TIFGSM, OnePixel: no job here uses them) import ``scipy.stats`` and ``scipy.optimize``, which cost
more than torch's own attacks. Here the package is registered without running its ``__init__``,
and only ``Attack`` and the attacks named in ``USED`` are imported, from their own modules. The
package's first attribute lookup that misses (``torchattacks.TIFGSM`` anywhere in the process)
runs the real ``__init__`` in place, so every other caller still sees the whole library, with the
same classes. Import torchattacks from here in ``atop``, never directly, so the order holds
wherever a job starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

# What atop uses: class name -> module under torchattacks.attacks.
USED = {"FGSM": "fgsm", "PGD": "pgd", "APGD": "apgd", "APGDT": "apgdt", "FAB": "fab", "Square": "square"}


def package_without_init(name: str) -> types.ModuleType:
    """Package ``name`` in ``sys.modules`` with its ``__init__`` not run yet (submodules import as
    usual); the first attribute it lacks runs the ``__init__`` and is then read as usual. A package
    already imported is returned as it is."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError(f"no package named {name!r}", name=name)
    package = importlib.util.module_from_spec(spec)

    def run_init(attribute: str):
        del package.__dict__["__getattr__"]  # once: a name the __init__ does not set raises as usual
        spec.loader.exec_module(package)
        return getattr(package, attribute)

    package.__dict__["__getattr__"] = run_init
    sys.modules[name] = package
    return package


torchattacks = package_without_init("torchattacks")
Attack = importlib.import_module("torchattacks.attack").Attack
for _class, _module in USED.items():
    if _class not in torchattacks.__dict__:
        setattr(torchattacks, _class, getattr(importlib.import_module(f"torchattacks.attacks.{_module}"), _class))

__all__ = ["USED", "Attack", "package_without_init", "torchattacks"]
