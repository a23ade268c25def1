"""The backend registry and the default backend."""

import importlib
import os

from .base import AbstractBackend

# Every backend is registered here, once: name -> (module, class). Modules are imported
# on first use, so that `import pysciml` never imports scipy's solvers or juliacall.
_REGISTRY = {
    "diffrax": ("pysciml._backend.diffrax", "DiffraxBackend"),
    "scipy": ("pysciml._backend.scipy", "ScipyBackend"),
    "julia": ("pysciml._backend.julia", "JuliaBackend"),
}

_default: str | AbstractBackend | None = None

ENV_VAR = "PYSCIML_BACKEND"


def backend_names() -> tuple[str, ...]:
    """The names accepted by `solve(backend=...)` and `set_default_backend`."""
    return tuple(_REGISTRY)


def _check_name(name: str, where: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(
            f"{where}: unknown backend {name!r}. Known backends: "
            f"{', '.join(map(repr, _REGISTRY))}."
        )


def set_default_backend(backend: "str | AbstractBackend | None") -> None:
    """Sets the backend used by `solve(..., backend=None)`.

    **Arguments:**

    - `backend`: a backend name (`"diffrax"`, `"scipy"` or `"julia"`), a configured
        backend object, or `None` to fall back to the `PYSCIML_BACKEND` environment
        variable and then to `"diffrax"`.
    """
    global _default
    if isinstance(backend, str):
        _check_name(backend, "`set_default_backend(backend=...)`")
    elif backend is not None and not isinstance(backend, AbstractBackend):
        raise TypeError(
            "`set_default_backend(backend=...)` takes a backend name or a backend "
            f"object; got {type(backend).__name__}."
        )
    _default = backend


def get_backend(backend: "str | AbstractBackend | None" = None) -> AbstractBackend:
    """Resolves a backend name, object or `None` (the default) to a backend object.

    **Arguments:**

    - `backend`: as for `solve(backend=...)`.

    **Returns:**

    The backend object.
    """
    if isinstance(backend, AbstractBackend):
        return backend
    if backend is None:
        backend = _default
        if isinstance(backend, AbstractBackend):
            return backend
        if backend is None:
            backend = os.environ.get(ENV_VAR) or "diffrax"
            _check_name(backend, f"the environment variable {ENV_VAR}")
    if not isinstance(backend, str):
        raise TypeError(
            "`solve(backend=...)` takes a backend name "
            f"({', '.join(map(repr, _REGISTRY))}) or a backend object; got "
            f"{type(backend).__name__}."
        )
    _check_name(backend, "`solve(backend=...)`")
    module, cls = _REGISTRY[backend]
    return getattr(importlib.import_module(module), cls)()
