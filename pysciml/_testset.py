"""Stiff problems with published reference solutions, from the IVP test set.

The problems, their parameters, initial values and time spans are those of

- F. Mazzia and C. Magherini, *Test Set for Initial Value Problem Solvers*, release
  2.4, Report 4/2008, Department of Mathematics, University of Bari, Italy (2008);
  http://pitagora.dm.uniba.it/~testset

as distributed in its R package

- F. Mazzia, J. R. Cash and K. Soetaert, *A Test Set for Stiff Initial Value Problem
  Solvers in the open source software R: package deTestSet*, J. Comput. Appl. Math.
  236 (2012) 4119-4131, doi:10.1016/j.cam.2012.03.014.

The reference values `y(t1)` below are copied digit for digit from cran/deTestSet at
commit d5c4cbe821920ad0a2ac36ec03c6175531316213 (version 1.1.7.4), file
`R/ex_reference.R`, lines 10-24; the equations from `R/ex_rober.R`, `R/ex_vdpol.R`,
`R/ex_orego.R` and `R/ex_e5.R` at the same commit. The test set computed them with
RADAU in double precision at `rtol = 1.1e-18` (the `solut` notes of its Fortran
files); they are the truth of the stiff rows of `python -m pysciml crossval` and of
`tests/test_ivp_testset.py`.

No gradient reference exists for these problems: they check values only.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ._problem import ODEProblem


class TestSetProblem(NamedTuple):
    """One problem of the test set, as pysciml solves it.

    - `name`: the test set's name.
    - `problem`: the `ODEProblem` on the test set's span `[0, t1]`.
    - `y0`, `args`: the initial state and the parameters (deTestSet's `parameter`).
    - `reference`: the test set's `y(t1)`, literal.
    - `atol_per_rtol`: the absolute tolerance to solve with, as a multiple of `rtol`
        (each problem says why its value).
    - `source`: where `reference` and the equations come from.
    - `components`: the solved state at `t1` -> the test set's `y(t1)` (the identity
        except for E5, which is solved in a reduced form).
    - `expected`: what `relative_error` compares with (`reference`, except for E5).
    - `significant`: the components `relative_error` measures.
    - `reference_error`: where it is known to exceed roundoff, the relative error of
        `expected` itself, i.e. the floor of `relative_error`; else `None`.
    """

    name: str
    problem: ODEProblem
    y0: np.ndarray
    args: np.ndarray
    reference: np.ndarray
    atol_per_rtol: float
    source: str
    components: object
    expected: np.ndarray
    significant: tuple[int, ...]
    reference_error: float | None = None

    def relative_error(self, y) -> float:
        """The largest relative error of the significant components.

        **Arguments:**

        - `y`: the solved state at `t1` (shape `y0.shape`).

        **Returns:**

        `max_k |y_k - expected_k| / |expected_k|` over `significant`, as a float.
        """
        full = np.asarray(self.components(np.asarray(y, dtype=np.float64)))
        k = list(self.significant)
        return float(np.max(np.abs(full[k] - self.expected[k]) / np.abs(self.expected[k])))


_SOURCE = "cran/deTestSet@d5c4cbe8 R/ex_reference.R"


def _identity(y):
    return y


def rober() -> TestSetProblem:
    """ROBER, Robertson's chemical kinetics, on `[0, 1e11]` (`R/ex_rober.R`)."""

    def field(t, y, k):
        y1, y2, y3 = y[0], y[1], y[2]
        return jnp.stack([
            -k[0] * y1 + k[2] * y2 * y3,
            k[0] * y1 - k[1] * y2 * y2 - k[2] * y2 * y3,
            k[1] * y2 * y2,
        ])

    # R/ex_reference.R lines 20-21, "rober".
    reference = np.array([0.2083340149701255e-7, 0.8333360770334713e-13,
                          0.9999999791665050])
    return TestSetProblem(
        "ROBER", ODEProblem(field, 0.0, 1e11), np.array([1.0, 0.0, 0.0]),
        np.array([0.04, 3e7, 1e4]), reference,
        # atol = 1e-14 at rtol 1e-8: deTestSet's own default atol. y2 (8.3e-14 at t1)
        # is slaved to y1 and y3, so it is still resolved to ~rtol (measured). A finer
        # atol is fragile on diffrax's Kvaerno5: at atol 1e-21, rtol 1e-8, changing
        # the parameters by one ulp takes it from 8,400 steps to max_steps (its
        # Newton iteration cannot converge below the roundoff of its updates).
        atol_per_rtol=1e-6, source=f"{_SOURCE} lines 20-21; R/ex_rober.R",
        components=_identity, expected=reference, significant=(0, 1, 2),
    )


def vdpol() -> TestSetProblem:
    """Van der Pol with μ = 1000, unscaled (the test set's VDPOLM), on `[0, 2000]`
    (`R/ex_vdpol.R`)."""

    def field(t, y, mu):
        return jnp.stack([y[1], mu[0] * (1 - y[0] ** 2) * y[1] - y[0]])

    # R/ex_reference.R line 10, "vdpol".
    reference = np.array([0.1706167732170469e1, -0.8928097010248125e-3])
    return TestSetProblem(
        "VDPOL μ=1000", ODEProblem(field, 0.0, 2000.0), np.array([2.0, 0.0]),
        np.array([1000.0]), reference,
        # y2 ends at -8.9e-4: atol resolves it to about rtol.
        atol_per_rtol=1e-3, source=f"{_SOURCE} line 10; R/ex_vdpol.R",
        components=_identity, expected=reference, significant=(0, 1),
    )


def orego() -> TestSetProblem:
    """OREGO, the Oregonator (Belousov–Zhabotinskii), on `[0, 360]`
    (`R/ex_orego.R`)."""

    def field(t, y, k):
        y1, y2, y3 = y[0], y[1], y[2]
        return jnp.stack([
            k[0] * (y2 + y1 - y1 * y2 - k[1] * y1 * y1),
            (y3 - (1 + y1) * y2) / k[2],
            k[3] * (y1 - y3),
        ])

    # R/ex_reference.R lines 12-13, "orego".
    reference = np.array([0.1000814870318523e1, 0.1228178521549917e4,
                          0.1320554942846706e3])
    return TestSetProblem(
        "OREGO", ODEProblem(field, 0.0, 360.0), np.array([1.0, 2.0, 3.0]),
        np.array([77.27, 8.375e-6, 77.27, 0.161]), reference,
        # The components stay above 1, 4.6e-3 and 1 on [0, 360], and end at 1 to 1e3:
        # atol = rtol, as deTestSet's defaults.
        atol_per_rtol=1.0, source=f"{_SOURCE} lines 12-13; R/ex_orego.R",
        components=_identity, expected=reference, significant=(0, 1, 2),
    )


def e5() -> TestSetProblem:
    """E5 (stiff DETEST), on `[0, 1e13]`, from the test set's `y0 = (1.76e-3, 0, 0,
    0)` (`R/ex_e5.R` for the equations).

    Three things differ from a plain copy, each for a measured reason:

    - **Initial values.** deTestSet defaults to `(1.76e-3, 1e-20, 1e-20, 1e-20)`, but
        its reference belongs to the test set's zeros: from deTestSet's values the
        solution ends near `y3 = 1e-20`, not `8.9e-23`.
    - **Reduced form.** `y2 - y3 - y4` is invariant (`f2 - f3 - f4 = 0`), and zero
        here. Solving all four equations, SciPy's Radau and BDF drift along it by
        ~1e-21, ten times the solution (`y2` comes out 9x or 0.001x the reference at
        rtol 1e-8 to 1e-10): roundoff in Newton solves with steps up to 1e12. So `y2`
        is eliminated, `y2 := y3 + y4`, and the state is `(y1, y3, y4)`.
    - **What is compared.** The exact `y4(t1)` is 0 to double precision, so `y2 =
        y3`; the reference has them 1.45e-3 apart, each ~7.2e-4 from their mean. The
        mean is accurate to ~1.7e-7 (SciPy Radau and BDF converge to it at rtol 1e-10
        to 1e-13), so `y2` and `y3` are compared with the mean. `y1` (reference 1e-291)
        and `y4` (0) are zero up to roundoff: only an absolute bound applies to them.
    """

    def field(t, u, p):
        a, b, c, m = p[0], p[1], p[2], p[3]
        y1, y3, y4 = u[0], u[1], u[2]
        y2 = y3 + y4
        p1, p2, p3, p4 = a * y1, b * y1 * y3, m * c * y2 * y3, c * y4
        return jnp.stack([-p1 - p2, p1 - p2 - p3 + p4, p2 - p4])

    def components(u):
        return np.array([u[0], u[1] + u[2], u[1], u[2]])

    # R/ex_reference.R lines 23-24, "E5".
    reference = np.array([0.1152903278711829e-290, 0.8867655517642120e-22,
                          0.8854814626268838e-22, 0.0])
    mean = (reference[1] + reference[2]) / 2
    return TestSetProblem(
        "E5", ODEProblem(field, 0.0, 1e13), np.array([1.76e-3, 0.0, 0.0]),
        np.array([7.89e-10, 1.1e7, 1.13e3, 1e6]), reference,
        # y2 and y3 end at 8.9e-23: atol resolves them to about rtol.
        atol_per_rtol=1e-22, source=f"{_SOURCE} lines 23-24; R/ex_e5.R",
        components=components, expected=np.array([0.0, mean, mean, 0.0]),
        significant=(1, 2),
        # SciPy's Radau and BDF on the reduced form agree on y2 = y3 =
        # 8.8612335e-23 at rtol 1e-10 to 1e-13 (to ~1e-11), 1.75e-7 from the mean.
        reference_error=1.75e-7,
    )


PROBLEMS = {"rober": rober, "vdpol": vdpol, "orego": orego, "e5": e5}
