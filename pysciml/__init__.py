"""pysciml: differentiable ODE solves with interchangeable backends (Diffrax, SciPy,
Julia), behind one `solve` and one `jax.custom_vjp`."""

from . import nn as nn
from . import pde as pde
from ._backend import (
    backend_names as backend_names,
)
from ._backend import (
    get_backend as get_backend,
)
from ._backend import (
    set_default_backend as set_default_backend,
)
from ._backend.base import (
    AbstractBackend as AbstractBackend,
)
from ._backend.base import (
    FlatProblem as FlatProblem,
)
from ._backend.base import (
    SolveOptions as SolveOptions,
)
from ._event import Event as Event
from ._problem import ODEProblem as ODEProblem
from ._sensitivity import (
    AbstractContinuousAdjoint as AbstractContinuousAdjoint,
)
from ._sensitivity import (
    AbstractSensitivity as AbstractSensitivity,
)
from ._sensitivity import (
    BacksolveAdjoint as BacksolveAdjoint,
)
from ._sensitivity import (
    DirectAdjoint as DirectAdjoint,
)
from ._sensitivity import (
    DiscreteAdjoint as DiscreteAdjoint,
)
from ._sensitivity import (
    ForwardSensitivity as ForwardSensitivity,
)
from ._sensitivity import (
    GaussAdjoint as GaussAdjoint,
)
from ._sensitivity import (
    InterpolatingAdjoint as InterpolatingAdjoint,
)
from ._sensitivity import (
    QuadratureAdjoint as QuadratureAdjoint,
)
from ._solution import RESULTS as RESULTS
from ._solution import Solution as Solution
from ._solve import solve as solve
from ._solver import (
    FBDF as FBDF,
)
from ._solver import (
    LSODA as LSODA,
)
from ._solver import (
    QNDF as QNDF,
)
from ._solver import (
    AbstractImplicitSolver as AbstractImplicitSolver,
)
from ._solver import (
    AbstractSolver as AbstractSolver,
)
from ._solver import (
    Dopri5 as Dopri5,
)
from ._solver import (
    Dopri8 as Dopri8,
)
from ._solver import (
    Kvaerno5 as Kvaerno5,
)
from ._solver import (
    RadauIIA5 as RadauIIA5,
)
from ._solver import (
    Rodas5P as Rodas5P,
)
from ._solver import (
    Tsit5 as Tsit5,
)

__version__ = "0.1.0"

# The backend classes, for options (`ps.ScipyBackend(native_rhs=False)`), imported on
# first use: `import pysciml` imports neither scipy's solvers nor juliacall.
_BACKEND_CLASSES = {
    "DiffraxBackend": "pysciml._backend.diffrax",
    "ScipyBackend": "pysciml._backend.scipy",
    "JuliaBackend": "pysciml._backend.julia",
}


def __getattr__(name):
    if name in _BACKEND_CLASSES:
        import importlib

        return getattr(importlib.import_module(_BACKEND_CLASSES[name]), name)
    raise AttributeError(f"module 'pysciml' has no attribute {name!r}")
