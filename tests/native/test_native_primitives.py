"""Each primitive the native compiler translates, against JAX itself (float64, 1e-12),
on random values drawn by hypothesis, scalar and array shapes, integer and boolean paths
included. Operations are grouped into a few kernels per shape, so that a run compiles
tens of kernels, not thousands; every test also checks that the primitives it claims
to cover are really in the jaxpr."""

import functools as ft

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax import lax
from jax.extend import core as jcore

from pysciml._native import UnsupportedPrimitive, compile_function

jax.config.update("jax_enable_x64", True)

RTOL = ATOL = 1e-12
SETTINGS = settings(max_examples=25, deadline=None)
SHAPES = [(), (5,), (2, 3)]


def primitives(fn, *args) -> set[str]:
    out = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            out.add(eqn.primitive.name)
            for sub in jcore.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


@ft.cache
def _kernel(fn, avals):
    # One compilation per (function, input shapes and dtypes).
    args = [np.zeros(s, d) for s, d in avals]
    return compile_function(fn, *args)


def check(fn, *args, covers=()):
    args = tuple(np.asarray(a) if np.ndim(a) else np.asarray(a)[()] for a in args)
    avals = tuple((np.shape(a), np.asarray(a).dtype) for a in args)
    if covers:
        missing = set(covers) - primitives(fn, *args)
        assert not missing, f"the test does not exercise {missing}"
    kernel = _kernel(fn, avals)
    got = kernel(*args)
    want = jax.jit(fn)(*args)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert np.shape(g) == w.shape, (i, np.shape(g), w.shape)
        assert np.asarray(g).dtype == w.dtype, (i, np.asarray(g).dtype, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")


def floats(shape, lo=-5.0, hi=5.0):
    # No magnitudes below 1e-100: XLA on CPU flushes subnormal results to zero and
    # Numba does not, so x**-2 at x = 1e-154 is inf in one and 8.5e307 in the other.
    elements = st.floats(lo, hi).map(lambda v: 0.0 if abs(v) < 1e-100 else v)
    return hnp.arrays(np.float64, shape, elements=elements)


def ints(shape, lo=-20, hi=20, dtype=np.int64):
    return hnp.arrays(dtype, shape, elements=st.integers(lo, hi))


def bools(shape):
    return hnp.arrays(np.bool_, shape)


# -- elementwise, float ------------------------------------------------------------------


def unary_float(x):
    pos = jnp.abs(x) + 0.25
    unit = jnp.tanh(x)  # in (-1, 1)
    return (
        -x, jnp.exp(x), jnp.exp2(x), jnp.log(pos), jnp.expm1(x), jnp.log1p(pos),
        jnp.sin(x), jnp.cos(x), jnp.tan(unit), jnp.arcsin(unit), jnp.arccos(unit),
        jnp.arctan(x), jnp.sinh(x), jnp.cosh(x), unit, jnp.arcsinh(x),
        jnp.arccosh(pos + 1.0), jnp.arctanh(0.9 * unit), jnp.sqrt(pos),
        lax.rsqrt(pos), jnp.cbrt(x), jnp.sign(x), jnp.floor(x), jnp.ceil(x),
        lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO),
        lax.round(x, lax.RoundingMethod.TO_NEAREST_EVEN), jax.nn.sigmoid(x),
        lax.erf(x), lax.erfc(x), lax.lgamma(pos), lax.square(x), jnp.isfinite(x),
        x**2, x**3, x**-1, x**-2, x**5, x**0, x**1,
    )


UNARY = {
    "neg", "exp", "exp2", "log", "expm1", "log1p", "sin", "cos", "tan", "asin",
    "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sqrt",
    "rsqrt", "cbrt", "abs", "sign", "floor", "ceil", "round", "logistic", "erf",
    "erfc", "lgamma", "square", "is_finite", "integer_pow",
}


@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data())
def test_unary_float(shape, data):
    x = data.draw(floats(shape))
    check(unary_float, x, covers=UNARY)


def test_round_halves():
    # The halfway cases and the float just below one half.
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, -3.5, 0.0])
    check(lambda x: (jnp.round(x), lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)), x)


def binary_float(x, y):
    pos = jnp.abs(x) + 0.5
    nz = jnp.where(jnp.abs(y) < 0.1, 1.0, y)
    return (
        x + y, x - y, x * y, x / nz, jnp.maximum(x, y), jnp.minimum(x, y),
        pos**y, jnp.arctan2(x, y), lax.rem(x, nz), jnp.nextafter(x, y),
        x == y, x != y, x < y, x <= y, x > y, x >= y, jnp.where(x < y, x, y),
        jnp.clip(x, -1.0, 2.0), lax.clamp(-1.0, x, 2.0), 2.0 * x + 1.0,
    )


BINARY = {
    "add", "sub", "mul", "div", "max", "min", "pow", "atan2", "rem", "nextafter",
    "eq", "ne", "lt", "le", "gt", "ge", "select_n", "clamp",
}


@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data())
def test_binary_float(shape, data):
    x = data.draw(floats(shape))
    # Ties on purpose: equal entries exercise eq/le/ge/max/min.
    y = data.draw(st.one_of(floats(shape), st.just(x)))
    check(binary_float, x, y, covers=BINARY)


def test_nonfinite_values_propagate():
    x = np.array([np.nan, np.inf, -np.inf, 1.0])
    y = np.array([1.0, np.nan, 2.0, np.inf])
    check(lambda x, y: (jnp.maximum(x, y), jnp.minimum(x, y), x * y, jnp.isfinite(x),
                        jnp.exp(x), jnp.where(jnp.isfinite(x), x, 0.0)), x, y)


# -- elementwise, integer and boolean -----------------------------------------------------


def integer_ops(i, j):
    nz = jnp.where(j == 0, 3, j)
    return (
        i + j, i - j, i * j, lax.div(i, nz), lax.rem(i, nz), jnp.maximum(i, j),
        jnp.minimum(i, j), i == j, i < j, i >= j, i & j, i | j, i ^ j, ~i,
        i.astype(jnp.float64), (i * 0.5).astype(jnp.int64), (i > 0).astype(jnp.int32),
        jnp.where(i > j, i, j), jnp.abs(i), jnp.sign(i), i**2,
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@SETTINGS
@given(data=st.data())
def test_integer_ops(shape, dtype, data):
    i = data.draw(ints(shape, dtype=dtype))
    j = data.draw(ints(shape, dtype=dtype))
    check(
        integer_ops, i, j,
        covers={"add", "sub", "mul", "div", "rem", "max", "min", "and", "or",
                "xor", "not", "convert_element_type", "select_n"},
    )


def bool_ops(a, b, x):
    return (
        a & b, a | b, a ^ b, ~a, jnp.where(a, x, -x), a.astype(jnp.float64),
        (x > 0) == a, lax.select_n(a.astype(jnp.int32) + b.astype(jnp.int32), x,
                                   2 * x, 3 * x),
        x.astype(jnp.bool_),
    )


@pytest.mark.parametrize("shape", SHAPES)
@SETTINGS
@given(data=st.data())
def test_boolean_ops(shape, data):
    check(
        bool_ops, data.draw(bools(shape)), data.draw(bools(shape)),
        data.draw(floats(shape)),
        covers={"and", "or", "xor", "not", "select_n", "convert_element_type"},
    )


@SETTINGS
@given(data=st.data())
def test_select_with_a_scalar_predicate(data):
    p = data.draw(st.booleans())
    x, y = data.draw(floats((4,))), data.draw(floats((4,)))
    check(lambda p, x, y: (lax.select(p, x, y), lax.select(p, 1.0, 2.0)), np.bool_(p),
          x, y, covers={"select_n"})


# -- shapes ---------------------------------------------------------------------------------


def shape_ops(x, v, s):
    # x: (2, 3, 4), v: (4,), s: ()
    return (
        jnp.broadcast_to(v, (2, 3, 4)), jnp.broadcast_to(s, (3, 2)),
        x[:, None, :, :], v[:, None] * v[None, :], x.reshape(6, 4), x.reshape(-1),
        v.reshape(2, 2), x[:1].squeeze(0), jnp.transpose(x, (2, 0, 1)), x.T,
        x[:, 1:3, ::2], x[1, ::-1], v[3:0:-2], jnp.concatenate([v, v[:2]]),
        jnp.concatenate([x, x[:, :1]], axis=1), jnp.stack([v, 2 * v], axis=1),
        jnp.stack([s, 2 * s]), *jnp.unstack(x, axis=1), *jnp.split(v, [1, 3]),
        *jnp.split(x, 2, axis=2),
    )


@SETTINGS
@given(data=st.data())
def test_shape_ops(data):
    check(
        shape_ops, data.draw(floats((2, 3, 4))), data.draw(floats((4,))),
        data.draw(st.floats(-3, 3)),
        covers={"broadcast_in_dim", "reshape", "squeeze", "transpose", "slice",
                "concatenate", "stack", "unstack", "split", "rev"} - {"rev"},
    )


def pad_ops(x, m):
    # x: (5,), m: (3, 4); negative and interior padding included.
    return (
        lax.pad(x, 0.0, [(1, 2, 0)]), lax.pad(x, -1.5, [(-1, 1, 2)]),
        lax.pad(x, 7.0, [(0, -2, 1)]), lax.pad(m, 0.0, [(1, -1, 0), (-2, 3, 1)]),
        jnp.pad(m, 1, mode="constant"),
    )


@SETTINGS
@given(data=st.data())
def test_pad(data):
    check(pad_ops, data.draw(floats((5,))), data.draw(floats((3, 4))), covers={"pad"})


def dynamic_ops(x, i, j):
    # Start indices out of range are clamped, as XLA does.
    return (
        lax.dynamic_slice(x, (i, j), (2, 2)), lax.dynamic_slice_in_dim(x, i, 3, 1),
        lax.dynamic_update_slice(x, jnp.ones((2, 1)), (j, i)), x[i % 4], jnp.roll(x, 1, 0),
    )


@SETTINGS
@given(data=st.data())
def test_dynamic_slices(data):
    x = data.draw(floats((4, 5)))
    i = np.int32(data.draw(st.integers(-3, 7)))
    j = np.int32(data.draw(st.integers(-3, 7)))
    check(dynamic_ops, x, i, j, covers={"dynamic_slice", "dynamic_update_slice"})


def gather_scatter_ops(x, i):
    # Out-of-range indices: "fill" gives the fill value, "clip" clamps, "drop"
    # discards the update, and the default of indexing normalises negative ones.
    return (
        x.at[i].get(mode="fill", fill_value=-7.0), x.at[i].get(mode="clip"), x[i % 5],
        x.at[i].add(1.0, mode="drop"), x.at[i].set(2.0, mode="clip"),
        x.at[i].add(1.0, mode="clip"),
    )


@SETTINGS
@given(data=st.data())
def test_gather_and_scatter(data):
    x = data.draw(floats((5,)))
    i = data.draw(ints((4,), lo=-9, hi=9, dtype=np.int32))
    check(lambda x, i: gather_scatter_ops(jnp.asarray(x), i), x, i,
          covers={"gather", "scatter-add", "scatter"})


def iota_ops(x):
    return (
        jnp.arange(5), lax.broadcasted_iota(jnp.int32, (3, 4), 1),
        lax.broadcasted_iota(jnp.float64, (3, 4), 0) * x, jnp.eye(4) @ x.T,
    )


def test_iota():
    check(iota_ops, np.random.default_rng(0).normal(size=(3, 4)), covers={"iota"})


# -- reductions ----------------------------------------------------------------------------


def reduce_ops(x, b):
    # x: (2, 3, 4)
    return (
        x.sum(), x.sum(0), x.sum((0, 2)), x.sum(2), x.max(), x.max(1), x.min((1, 2)),
        x.min(0), x.prod(1), jnp.prod(x[0]), b.all(), b.all(1), b.any(0),
        b.any((0, 1)), jnp.mean(x, axis=-1), x.astype(jnp.int64).sum(1),
    )


@SETTINGS
@given(data=st.data())
def test_reductions(data):
    check(
        reduce_ops, data.draw(floats((2, 3, 4))), data.draw(bools((2, 3, 4))),
        covers={"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                "reduce_or"},
    )


# -- dot_general ------------------------------------------------------------------------


def dot_ops(a, b, v, s, k):
    # a: (3, 4), b: (4, 2), v: (4,), s: (), k: (2, 3, 4), integer paths via ints
    return (
        a @ b, a @ v, v @ v, jnp.outer(v, v), s * v, jnp.dot(s, v),
        jnp.einsum("bij,jk->bik", k, b), jnp.einsum("bij,bij->b", k, k),
        jnp.einsum("bij,bkj->bik", k, k), jnp.einsum("ij,bjk->bik", a.T @ a, k.transpose(0, 2, 1)) ,
        jnp.einsum("ij,ij->", a, a), lax.dot_general(v, v, (((), ()), ((), ()))),
        a.astype(jnp.int64) @ b.astype(jnp.int64), jnp.tensordot(k, a.T, axes=([2], [0])),
    )


@SETTINGS
@given(data=st.data())
def test_dot_general(data):
    check(
        dot_ops, data.draw(floats((3, 4))), data.draw(floats((4, 2))),
        data.draw(floats((4,))), data.draw(st.floats(-3, 3)),
        data.draw(floats((2, 3, 4))), covers={"dot_general"},
    )


# -- calls, AD leftovers --------------------------------------------------------------


@jax.custom_jvp
def _softsign(x):
    return x / (1.0 + jnp.abs(x))


_softsign.defjvp(lambda p, t: (_softsign(p[0]), t[0] / (1.0 + jnp.abs(p[0])) ** 2))


@jax.custom_vjp
def _clip_grad(x):
    return x


_clip_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))


def call_ops(x):
    inner = jax.jit(lambda z: jnp.sin(z) * 2.0)
    return (
        inner(x), _softsign(x), jax.nn.relu(x), jax.nn.softplus(x), _clip_grad(x) * 3,
        lax.stop_gradient(x) + x, jax.grad(lambda z: jnp.sum(jnp.tanh(z) ** 2))(x),
        jax.nn.gelu(x),
    )


@SETTINGS
@given(data=st.data())
def test_calls_are_inlined(data):
    check(call_ops, data.draw(floats((6,))),
          covers={"jit", "custom_jvp_call", "custom_vjp_call"})


def test_an_unsupported_primitive_is_named():
    with pytest.raises(UnsupportedPrimitive, match="cumsum"):
        compile_function(lambda x: jnp.cumsum(x), np.ones(3))
    with pytest.raises(UnsupportedPrimitive, match="scan|while"):
        compile_function(
            lambda x: lax.fori_loop(0, 3, lambda i, c: c * 2, x), np.ones(3)
        )


def test_outputs_never_alias_inputs():
    # An output that is an input (or a view of one) comes back as a copy: a host
    # solver may write to what a callback returned.
    y = np.arange(4.0)
    kernel = compile_function(lambda t, y: (y, y[1:], y.reshape(2, 2)), 0.0, y)
    outs = kernel(0.0, y)
    for out in outs:
        out[...] = -1.0
    np.testing.assert_array_equal(y, np.arange(4.0))
