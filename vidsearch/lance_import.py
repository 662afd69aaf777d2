"""Import lancedb without the REST namespace client it never needs here.

Why: `import lancedb` imports `lance_namespace`, which imports the generated REST client package
`lance_namespace_urllib3_client` for its model classes; that package's `__init__` also builds ~370
API endpoint wrappers with pydantic's `validate_call` at import. That was 2.5-2.8 of the ~4.8 s of CPU
`import lancedb` took here (every `vidsearch search --db`, every `vidsearch index` re-run, every
server start), for a client of remote namespace servers that a local or S3 index never talks to.

`defer_namespace_client()` registers the package as a module whose `__init__` has not run yet: its
submodules (`.models`, what lancedb imports) load as usual through the package's `__path__`, and the
first access to anything the `__init__` itself defines (the API classes, `ApiClient`) runs it then,
so code that does use the REST client still gets it. Nothing happens when the package is missing,
already imported, or laid out differently (no `__path__`).
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["defer_namespace_client"]

PACKAGE = "lance_namespace_urllib3_client"


class _Deferred(types.ModuleType):
    """A package whose `__init__` runs on the first missing attribute, not at import."""

    def __getattr__(self, attr: str):
        if attr.startswith("__") or self.__dict__.get("_vidsearch_loading"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        self.__dict__["_vidsearch_loading"] = True
        self.__spec__.loader.exec_module(self)  # the real __init__, on this module object
        return getattr(self, attr)


def defer_namespace_client() -> bool:
    """Register the REST client package deferred; True when it was (see the module docstring)."""
    if PACKAGE in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return False
    module = _Deferred(PACKAGE)
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__path__, module.__package__ = list(spec.submodule_search_locations), PACKAGE
    sys.modules[PACKAGE] = module
    return True
