"""Solver names. Each is a pure tag, named as in OrdinaryDiffEq.jl; every backend maps
the tags it supports onto its own native method in one table (`Backend.solvers`)."""

import equinox as eqx


class AbstractSolver(eqx.Module):
    """Base class of every solver tag. A tag holds no state: the backend decides how to
    run it. See each backend's `solvers` table for the native method behind it."""


class AbstractImplicitSolver(AbstractSolver):
    """Marker for implicit (stiff) solvers."""


class Tsit5(AbstractSolver):
    """Tsitouras' 5(4) explicit Runge--Kutta method. A good default for non-stiff
    problems."""


class Dopri5(AbstractSolver):
    """Dormand--Prince 5(4) explicit Runge--Kutta method (SciPy's `RK45`,
    OrdinaryDiffEq's `DP5`)."""


class Dopri8(AbstractSolver):
    """Dormand--Prince 8(5,3) explicit Runge--Kutta method (SciPy's `DOP853`,
    OrdinaryDiffEq's `DP8`). Efficient at tight tolerances."""


class Kvaerno5(AbstractImplicitSolver):
    """Kværnø's 5(4) ESDIRK method, L-stable, for stiff problems."""


class Rodas5P(AbstractImplicitSolver):
    """Rosenbrock 5(4) method with a stiffly accurate embedded pair, for stiff
    problems (OrdinaryDiffEq)."""


class RadauIIA5(AbstractImplicitSolver):
    """Radau IIA fully implicit Runge--Kutta method of order 5 (SciPy's `Radau`)."""


class FBDF(AbstractImplicitSolver):
    """Fixed-leading-coefficient variable-order BDF method (OrdinaryDiffEq), for large
    stiff systems."""


class QNDF(AbstractImplicitSolver):
    """Quasi-constant step size variable-order numerical differentiation formulae (the
    method of SciPy's `BDF` and MATLAB's `ode15s`), for large stiff systems."""


class LSODA(AbstractSolver):
    """Automatic switching between Adams (non-stiff) and BDF (stiff) methods, from
    ODEPACK (SciPy's `LSODA`)."""
