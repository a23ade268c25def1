"""The C ABI of native kernels (`pysciml._native._cabi`) as the Julia bridge calls it.

No Julia here: each exported pointer is called through ctypes from its bare address,
with the argument types, return type and argument order read from the `ccall` lines of
`julia/pycallbacks.jl` (`make_native_odefunction`), and compared with JAX on
Lotka-Volterra and an MLP vector field. The Jacobian pointer (no `ccall` uses it yet)
is checked against the ABI's column-major layout."""

import ctypes
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numba import types

from pysciml._native._cabi import ABI
from pysciml._selftest import export_field

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "julia" / "pycallbacks.jl"

# The wrapper's names in julia/pycallbacks.jl: pointer variables -> ABI entries, and the
# local names passed to `ccall` -> the roles of the ABI's arguments.
POINTERS = {"fptr": "f", "vjp_u_ptr": "vjp_u", "vjp_p_ptr": "vjp_p"}
ROLES = {"o": "out", "vv": "v", "uu": "u", "pp": "p", "tf": "t"}
EXPECTED_ROLES = {"f": ["out", "u", "p", "t"], "vjp_u": ["out", "v", "u", "p", "t"],
                  "vjp_p": ["out", "v", "u", "p", "t"]}
JULIA_TYPES = {"Ptr{Float64}": types.CPointer(types.float64), "Float64": types.float64,
               "Cint": types.int32}
CTYPES = {"Ptr{Float64}": ctypes.POINTER(ctypes.c_double), "Float64": ctypes.c_double,
          "Cint": ctypes.c_int32}

CCALL = re.compile(r"ccall\((\w+),\s*(\w+),\s*\(([^()]*)\),\s*([^()]*)\)", re.S)


def julia_ccalls() -> dict[str, tuple[str, list[str], list[str]]]:
    """ABI name -> (return type, argument types, argument roles) of every `ccall` in
    the bridge."""
    out = {}
    for match in CCALL.finditer(BRIDGE.read_text()):
        pointer, ret, argtypes, args = match.groups()
        name = POINTERS[pointer]
        assert name not in out, f"two ccalls of {pointer}"
        out[name] = (ret, [a.strip() for a in argtypes.split(",")],
                     [ROLES[a.strip()] for a in args.split(",")])
    return out


def test_the_bridge_ccalls_every_hook_with_the_abi_signature():
    calls = julia_ccalls()
    assert set(calls) == {"f", "vjp_u", "vjp_p"}
    for name, (ret, argtypes, roles) in calls.items():
        sig = ABI[name]
        assert JULIA_TYPES[ret] == sig.return_type, name
        assert [JULIA_TYPES[a] for a in argtypes] == list(sig.args), name
        assert roles == EXPECTED_ROLES[name], name


def lotka_volterra(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p[0] * x - p[1] * x * z, -p[2] * z + p[3] * x * z])


H = 8  # hidden width of the MLP field


def mlp(t, y, p):
    n = y.shape[0]
    w1 = p[: H * n].reshape(H, n)
    b1 = p[H * n : H * n + H]
    w2 = p[H * n + H : 2 * H * n + H].reshape(n, H)
    b2 = p[2 * H * n + H :]
    return jnp.tanh(w2 @ jnp.tanh(w1 @ y + b1) + b2) - 0.1 * t * y


FIELDS = {"lotka_volterra": (lotka_volterra, 2, 4), "mlp": (mlp, 3, 2 * H * 3 + H + 3)}


@pytest.fixture(scope="module", params=sorted(FIELDS))
def field(request):
    fn, n, m = FIELDS[request.param]
    return fn, n, m, export_field(fn, n, m)


def _point(n, m, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, m) if m > 4 else rng.uniform(0.5, 2.0, m)
    return float(rng.uniform(0, 2)), rng.uniform(0.2, 2.0, n), p, rng.normal(size=n)


def _call_as_julia(pointer, name, size, t, u, p, v):
    """The pointer called the way the bridge's `ccall` line for `name` calls it."""
    ret, argtypes, roles = julia_ccalls()[name]
    fn = ctypes.CFUNCTYPE(CTYPES[ret], *(CTYPES[a] for a in argtypes))(pointer.address)
    values = {"out": np.full(size, np.nan), "u": u.copy(), "p": p.copy(), "v": v.copy()}
    dp = ctypes.POINTER(ctypes.c_double)
    args = [t if role == "t" else values[role].ctypes.data_as(dp) for role in roles]
    rc = fn(*args)
    return values, rc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pointers_called_as_the_bridge_calls_them_match_jax(field, seed):
    fn, n, m, pointers = field
    t, u, p, v = _point(n, m, seed)
    _, pullback = jax.vjp(lambda u_, p_: fn(t, u_, p_), u, p)
    want_u, want_p = pullback(v)
    want = {"f": (n, fn(t, u, p)), "vjp_u": (n, want_u), "vjp_p": (m, want_p)}
    for name, (size, expected) in want.items():
        values, rc = _call_as_julia(getattr(pointers, name), name, size, t, u, p, v)
        assert rc == 0, name
        np.testing.assert_allclose(values["out"], expected, rtol=1e-12, atol=1e-14,
                                   err_msg=name)
        # The bridge passes the solver's own arrays without a copy: never written.
        for role, original in (("u", u), ("p", p), ("v", v)):
            np.testing.assert_array_equal(values[role], original, err_msg=f"{name} {role}")


def test_jac_is_column_major(field):
    fn, n, m, pointers = field
    t, u, p, _ = _point(n, m, 3)
    jac = np.asarray(jax.jacfwd(fn, argnums=1)(t, u, p))
    assert not np.allclose(jac, jac.T)  # so that the layout shows
    dp = ctypes.POINTER(ctypes.c_double)
    abi = ctypes.CFUNCTYPE(ctypes.c_int32, dp, dp, dp, ctypes.c_double)
    out = np.full(n * n, np.nan)
    rc = abi(pointers.jac.address)(out.ctypes.data_as(dp), u.ctypes.data_as(dp),
                                   p.ctypes.data_as(dp), t)
    assert rc == 0
    # out[i + n*j] = ∂f_i/∂u_j: Julia's `reshape(out, n, n)` is the Jacobian.
    np.testing.assert_allclose(out.reshape(n, n, order="F"), jac, rtol=1e-12, atol=1e-14)


def test_a_non_finite_output_returns_1(field):
    fn, n, m, pointers = field
    t, u, p, v = _point(n, m, 4)
    u[0] = np.nan
    for name, size in (("f", n), ("vjp_u", n), ("vjp_p", m)):
        _, rc = _call_as_julia(getattr(pointers, name), name, size, t, u, p, v)
        assert rc == 1, name
