"""pysciml: differentiable ODE solves with interchangeable backends (Diffrax, SciPy,
Julia), behind one `solve` and one `jax.custom_vjp`."""

from ._backend import (
    backend_names as backend_names,
    get_backend as get_backend,
    set_default_backend as set_default_backend,
)
from ._backend.base import (
    AbstractBackend as AbstractBackend,
    FlatProblem as FlatProblem,
    SolveOptions as SolveOptions,
)
from ._problem import ODEProblem as ODEProblem
from ._sensitivity import (
    AbstractContinuousAdjoint as AbstractContinuousAdjoint,
    AbstractSensitivity as AbstractSensitivity,
    BacksolveAdjoint as BacksolveAdjoint,
    DiscreteAdjoint as DiscreteAdjoint,
    GaussAdjoint as GaussAdjoint,
    InterpolatingAdjoint as InterpolatingAdjoint,
    QuadratureAdjoint as QuadratureAdjoint,
)
from ._solution import RESULTS as RESULTS, Solution as Solution
from ._solve import solve as solve
from ._solver import (
    AbstractImplicitSolver as AbstractImplicitSolver,
    AbstractSolver as AbstractSolver,
    Dopri5 as Dopri5,
    Dopri8 as Dopri8,
    FBDF as FBDF,
    Kvaerno5 as Kvaerno5,
    LSODA as LSODA,
    QNDF as QNDF,
    RadauIIA5 as RadauIIA5,
    Rodas5P as Rodas5P,
    Tsit5 as Tsit5,
)


__version__ = "0.1.0"
