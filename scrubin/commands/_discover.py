"""Discovery of sub-command modules: each non-underscore module of a package that exposes
``register(subparsers)``. Used for the top level and for command groups such as
``scrubin register points|surface``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType


def register_all(sub: argparse._SubParsersAction, package: ModuleType) -> None:
    """Import every public module/sub-package of ``package`` and call its ``register(sub)``."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        module.register(sub)


def add_group(
    sub: argparse._SubParsersAction, package: ModuleType, name: str, help_text: str
) -> None:
    """Add command group ``name`` whose sub-commands are the modules of ``package``."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    kinds = parser.add_subparsers(dest=f"{name}_kind", metavar="KIND")
    kinds.required = True
    register_all(kinds, package)
