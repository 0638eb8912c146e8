"""Importing LanceDB without its REST namespace client's start-up cost.

``lancedb`` imports ``lance_namespace``, which imports models from the generated
``lance_namespace_urllib3_client`` package; that package's ``__init__`` also imports
every REST API class, and each of their 366 methods builds a pydantic validator at
import time: about a second of every command's start (measured on a 2-core AMD EPYC:
``import lancedb`` 1.85 s, 1.1 s without it). grainline opens local folders and
object stores, never a REST namespace, so the package is registered without running
its ``__init__``: its submodules (the models LanceDB uses) import as usual, and the
first attribute asked of the package itself runs the real ``__init__`` then."""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

_CLIENT = "lance_namespace_urllib3_client"
_lock = threading.RLock()


def _defer_package_init(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed, or not a package: nothing to defer
    module = importlib.util.module_from_spec(spec)
    ran: list[bool] = []

    def __getattr__(attr: str) -> Any:
        with _lock:
            if not ran:
                ran.append(True)
                spec.loader.exec_module(module)  # type: ignore[union-attr]
                if attr in module.__dict__:
                    return module.__dict__[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module


def import_lancedb() -> ModuleType:
    """``import lancedb``, with the REST namespace client's ``__init__`` deferred."""
    with _lock:
        if "lancedb" not in sys.modules:
            quiet_lance_logs()
            _defer_package_init(_CLIENT)
        import lancedb
    return lancedb


def import_lance() -> ModuleType:
    """``import lance`` (pylance, pinned to the lance version LanceDB bundles): the
    transaction and fragment API that LanceDB's own API does not expose."""
    import_lancedb()
    try:
        import lance
    except ImportError as exc:  # pragma: no cover - a dependency
        raise RuntimeError("grainline needs pylance (the lance version LanceDB bundles): "
                           "pip install 'pylance==13.0.0'") from exc
    return lance


def quiet_lance_logs(verbose: bool = False) -> None:
    """Keep LanceDB's and Lance's own Rust log lines (deprecation notes, "loading legacy
    FTS index", statistics warnings) out of the user's terminal. Each extension module
    reads its level once, when it is imported: ``lancedb`` from ``LANCEDB_LOG``, pylance
    from ``LANCE_LOG``, both ``warn`` by default (so ``LANCE_LOG=error`` alone left
    LanceDB's copy of Lance warning). A level the user set is kept; ``verbose`` keeps
    the libraries' own default (warnings) where none is set. Called before either
    module is imported (``grainline --verbose`` sets it first)."""
    import os

    for var in ("LANCEDB_LOG", "LANCE_LOG"):
        os.environ.setdefault(var, "warn" if verbose else "error")
