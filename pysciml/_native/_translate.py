"""One traversal of a jaxpr, emitting Python source over NumPy that Numba compiles.

Conventions of the generated code:

- a rank-0 value is a Numba scalar (`np.float64`, `np.int64`, `np.bool_`, …), never a
  0-d array: Numba handles scalars natively and 0-d arrays poorly;
- every other value is an array whose shape is known here, so reshapes, slices and
  broadcasts are emitted with literal shapes (a kernel is specific to its shapes);
- closed-over constants arrive as extra arguments (`c0`, `c1`, …), not as literals, so
  the source (and its disk cache) depends on their shapes only.

Each primitive has one rule, `rule(tr, eqn, *args) -> expression or list of them`,
where `args` are the operands as source text. A primitive without a rule raises
`UnsupportedPrimitive`, and the caller falls back to XLA.
"""

import math
from typing import Any

import numpy as np
from jax.extend import core as jcore

_SUB_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class UnsupportedPrimitive(Exception):
    """A primitive (or a use of one) that the native compiler does not translate."""

    def __init__(self, primitive: str, detail: str = ""):
        self.primitive = primitive
        super().__init__(primitive + (f" ({detail})" if detail else ""))


def _np_dtype(aval) -> str:
    name = np.dtype(aval.dtype).name
    return "np.bool_" if name == "bool" else f"np.{name}"


def _shape(aval) -> tuple[int, ...]:
    return tuple(int(d) for d in aval.shape)


def _literal(value, aval) -> str:
    """Source text of a scalar constant, typed as JAX types it (exactly: `repr` of a
    float round-trips)."""
    dtype = np.dtype(aval.dtype)
    v = np.asarray(value).item()
    if dtype == np.bool_:
        return "True" if v else "False"
    if dtype.kind == "f":
        if math.isnan(v):
            text = "np.nan"
        elif math.isinf(v):
            text = "np.inf" if v > 0 else "-np.inf"
        else:
            text = repr(float(v))
        return f"np.{dtype.name}({text})"
    if dtype.kind in "iu":
        return f"np.{dtype.name}({int(v)})"
    raise UnsupportedPrimitive("literal", f"dtype {dtype}")


class Translator:
    """Emits the body of one kernel. `lines` is the body; `consts` the constant
    arrays, in argument order after the kernel's own inputs."""

    def __init__(self):
        self.lines: list[str] = []
        self.consts: list[np.ndarray] = []
        self._env: dict[Any, str] = {}
        self._count = 0
        # Names of values that may alias a kernel input (views): copied on return.
        self.views: set[str] = set()

    # -- naming ------------------------------------------------------------------

    def fresh(self) -> str:
        self._count += 1
        return f"v{self._count}"

    def emit(self, expr: str, *, view: bool = False) -> str:
        name = self.fresh()
        self.lines.append(f"{name} = {expr}")
        if view:
            self.views.add(name)
        return name

    def read(self, atom) -> str:
        if isinstance(atom, jcore.Literal):
            return _literal(atom.val, atom.aval)
        return self._env[atom]

    def const(self, value) -> str:
        value = np.asarray(value)
        if value.ndim == 0:
            return _literal(value, value)
        self.consts.append(np.ascontiguousarray(value))
        return f"c{len(self.consts) - 1}"

    # -- traversal ---------------------------------------------------------------

    def run(self, jaxpr, consts, args: list[str]) -> list[str]:
        """Translates `jaxpr` applied to `args` (source names), inlining calls.
        Returns the source names of its outputs."""
        for var, value in zip(jaxpr.constvars, consts):
            self._env[var] = self.const(value)
        for var, name in zip(jaxpr.invars, args, strict=True):
            self._env[var] = name
        for eqn in jaxpr.eqns:
            ins = [self.read(v) for v in eqn.invars]
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                outs = self.run(sub[0], sub[1], ins)
            else:
                rule = RULES.get(eqn.primitive.name)
                if rule is None:
                    raise UnsupportedPrimitive(eqn.primitive.name)
                outs = rule(self, eqn, *ins)
                outs = outs if isinstance(outs, list) else [outs]
            for var, out in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    self._env[var] = out
        return [self.read(v) for v in jaxpr.outvars]


def _sub_jaxpr(eqn):
    """`(jaxpr, consts)` of a call-like primitive that is inlined (jit, pjit,
    custom_jvp_call, custom_vjp_call, closed_call, remat): its primal computation
    is exactly the sub-jaxpr, whose derivative rules do not matter here."""
    if eqn.primitive.name in ("cond", "while", "scan"):
        return None
    for key in _SUB_JAXPR_PARAMS:
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jcore.Jaxpr):
            return sub, ()
    return None


# ------------------------------------------------------------------------------------
# Rules
# ------------------------------------------------------------------------------------

RULES: dict[str, Any] = {}


def _rule(*names):
    def register(fn):
        for name in names:
            RULES[name] = fn
        return fn

    return register


def _out(eqn, i=0):
    return eqn.outvars[i].aval


def _in(eqn, i=0):
    return eqn.invars[i].aval


def _is_scalar(aval) -> bool:
    return len(aval.shape) == 0


def _kind(aval) -> str:
    return np.dtype(aval.dtype).kind


def _binary(template):
    def rule(tr, eqn, a, b):
        return tr.emit(template.format(a=a, b=b))

    return rule


for _name, _template in {
    "add": "{a} + {b}",
    "add_any": "{a} + {b}",
    "sub": "{a} - {b}",
    "mul": "{a} * {b}",
    "max": "np.maximum({a}, {b})",
    "min": "np.minimum({a}, {b})",
    "atan2": "np.arctan2({a}, {b})",
    "nextafter": "np.nextafter({a}, {b})",
    "eq": "{a} == {b}",
    "ne": "{a} != {b}",
    "lt": "{a} < {b}",
    "le": "{a} <= {b}",
    "gt": "{a} > {b}",
    "ge": "{a} >= {b}",
    "shift_left": "np.left_shift({a}, {b})",
}.items():
    RULES[_name] = _binary(_template)


@_rule("and", "or", "xor")
def _logical(tr, eqn, a, b):
    op = {"and": "&", "or": "|", "xor": "^"}[eqn.primitive.name]
    if _kind(_out(eqn)) == "b":
        fn = {"and": "logical_and", "or": "logical_or", "xor": "logical_xor"}
        return tr.emit(f"np.{fn[eqn.primitive.name]}({a}, {b})")
    return tr.emit(f"{a} {op} {b}")


@_rule("not")
def _not(tr, eqn, a):
    if _kind(_out(eqn)) == "b":
        return tr.emit(f"np.logical_not({a})")
    return tr.emit(f"np.invert({a})")


@_rule("div")
def _div(tr, eqn, a, b):
    if _kind(_out(eqn)) in "iu":
        return tr.emit(f"{_cast(f'rt.idiv({a}, {b})', _out(eqn))}")
    return tr.emit(f"{a} / {b}")


@_rule("rem")
def _rem(tr, eqn, a, b):
    if _kind(_out(eqn)) in "iu":
        return tr.emit(f"{_cast(f'rt.irem({a}, {b})', _out(eqn))}")
    return tr.emit(f"np.fmod({a}, {b})")


@_rule("pow")
def _pow(tr, eqn, a, b):
    return tr.emit(f"{a} ** {b}")


@_rule("integer_pow")
def _integer_pow(tr, eqn, a):
    y = int(eqn.params["y"])
    if y == 0:
        return tr.emit(_full(_out(eqn), "1"))
    # Repeated multiplication, as XLA does (pow() may differ in the last bit).
    k = abs(y)
    acc, base = None, a
    while True:
        if k & 1:
            acc = base if acc is None else tr.emit(f"{acc} * {base}")
        k >>= 1
        if not k:
            break
        base = tr.emit(f"{base} * {base}")
    return tr.emit(f"1.0 / {acc}") if y < 0 else tr.emit(f"{acc} + 0" if acc == a else acc)


def _unary(template):
    def rule(tr, eqn, a):
        return tr.emit(template.format(a=a))

    return rule


for _name, _template in {
    "neg": "-{a}",
    "exp": "np.exp({a})",
    "exp2": "np.exp2({a})",
    "log": "np.log({a})",
    "expm1": "np.expm1({a})",
    "log1p": "np.log1p({a})",
    "sin": "np.sin({a})",
    "cos": "np.cos({a})",
    "tan": "np.tan({a})",
    "asin": "np.arcsin({a})",
    "acos": "np.arccos({a})",
    "atan": "np.arctan({a})",
    "sinh": "np.sinh({a})",
    "cosh": "np.cosh({a})",
    "tanh": "np.tanh({a})",
    "asinh": "np.arcsinh({a})",
    "acosh": "np.arccosh({a})",
    "atanh": "np.arctanh({a})",
    "sqrt": "np.sqrt({a})",
    "rsqrt": "1.0 / np.sqrt({a})",
    "cbrt": "np.cbrt({a})",
    "abs": "np.abs({a})",
    "sign": "np.sign({a})",
    "floor": "np.floor({a})",
    "ceil": "np.ceil({a})",
    "is_finite": "np.isfinite({a})",
    "logistic": "rt.logistic({a})",
    "erf": "rt.erf({a})",
    "erfc": "rt.erfc({a})",
    "lgamma": "rt.lgamma({a})",
    "square": "{a} * {a}",
}.items():
    RULES[_name] = _unary(_template)


@_rule("round")
def _round(tr, eqn, a):
    # rounding_method 0: halves away from zero; 1: to even (NumPy's own rule).
    if int(eqn.params["rounding_method"]) == 0:
        return tr.emit(f"rt.round_away({a})")
    return tr.emit(f"np.round({a})")


@_rule("copy", "copy_p", "stop_gradient", "optimization_barrier")
def _identity(tr, eqn, *args):
    # Aliases of their operands: copied on return if they leave the kernel.
    for a in args:
        tr.views.add(a)
    return list(args) if len(args) > 1 else args[0]


@_rule("reduce_precision")
def _reduce_precision(tr, eqn, a):
    dtype = np.finfo(np.dtype(_in(eqn).dtype))
    if (eqn.params["exponent_bits"], eqn.params["mantissa_bits"]) != (
        dtype.nexp,
        dtype.nmant,
    ):
        raise UnsupportedPrimitive("reduce_precision", "to a narrower format")
    tr.views.add(a)
    return a


def _cast(expr: str, aval) -> str:
    if _is_scalar(aval):
        return f"{_np_dtype(aval)}({expr})"
    return f"({expr}).astype({_np_dtype(aval)})"


def _full(aval, value: str) -> str:
    if _is_scalar(aval):
        return f"{_np_dtype(aval)}({value})"
    return f"np.full({_shape(aval)}, {_np_dtype(aval)}({value}))"


@_rule("convert_element_type")
def _convert(tr, eqn, a):
    src, dst = _in(eqn), _out(eqn)
    if np.dtype(src.dtype) == np.dtype(dst.dtype):
        tr.views.add(a)
        return a
    if _kind(dst) == "b":
        return tr.emit(f"{a} != 0")
    return tr.emit(_cast(a, dst))


@_rule("clamp")
def _clamp(tr, eqn, lo, x, hi):
    return tr.emit(f"np.minimum(np.maximum({x}, {lo}), {hi})")


@_rule("select_n")
def _select_n(tr, eqn, pred, *cases):
    out = _out(eqn)
    if _is_scalar(_in(eqn, 0)) and not _is_scalar(out):
        pred = tr.emit(f"np.full({_shape(out)}, {pred})")
    if _is_scalar(out):
        expr = cases[-1]
        for i in range(len(cases) - 2, -1, -1):
            test = f"not {pred}" if len(cases) == 2 else f"{pred} == {i}"
            expr = f"({cases[i]} if {test} else {expr})"
        return tr.emit(expr)
    # Scalar cases against an array predicate: give them the output's shape.
    cases = [
        tr.emit(_full(out, c)) if _is_scalar(eqn.invars[i + 1].aval) else c
        for i, c in enumerate(cases)
    ]
    if len(cases) == 2:
        return tr.emit(f"np.where({pred}, {cases[1]}, {cases[0]})")
    expr = cases[-1]
    for i in range(len(cases) - 2, -1, -1):
        expr = f"np.where({pred} == {i}, {cases[i]}, {expr})"
    return tr.emit(expr)


# -- shapes ----------------------------------------------------------------------------


def _contiguous(a: str) -> str:
    return f"np.ascontiguousarray({a})"


def _reshape(tr, a: str, src, shape: tuple[int, ...]) -> str:
    """`a` (of aval `src`) reshaped to `shape`, respecting the scalar convention."""
    if _is_scalar(src):
        if not shape:
            return a
        return tr.emit(f"np.full({shape}, {a})")
    if not shape:
        return tr.emit(f"{_contiguous(a)}.ravel()[0]")
    if _shape(src) == shape:
        return a
    return tr.emit(f"{_contiguous(a)}.reshape({shape})", view=True)


@_rule("reshape", "squeeze")
def _reshape_rule(tr, eqn, a, *dynamic):
    if dynamic or eqn.params.get("dimensions") is not None and eqn.primitive.name == "reshape":
        raise UnsupportedPrimitive("reshape", "with dynamic shapes or dimensions")
    return _reshape(tr, a, _in(eqn), _shape(_out(eqn)))


@_rule("broadcast_in_dim")
def _broadcast_in_dim(tr, eqn, a, *dynamic):
    if dynamic:
        raise UnsupportedPrimitive("broadcast_in_dim", "with dynamic shapes")
    shape = _shape(_out(eqn))
    src = _in(eqn)
    if _is_scalar(src):
        return tr.emit(f"np.full({shape}, {a})") if shape else a
    dims = eqn.params["broadcast_dimensions"]
    inter = tuple(
        _shape(src)[dims.index(i)] if i in dims else 1 for i in range(len(shape))
    )
    # Operand dims in order (broadcast_dimensions is increasing), so a reshape.
    r = _reshape(tr, a, src, inter)
    if inter == shape:
        return r
    return tr.emit(f"np.broadcast_to({r}, {shape}).copy()")


@_rule("transpose")
def _transpose(tr, eqn, a):
    perm = tuple(int(i) for i in eqn.params["permutation"])
    if perm == tuple(range(len(perm))):
        tr.views.add(a)
        return a
    return tr.emit(f"np.ascontiguousarray(np.transpose({a}, {perm}))")


def _index(parts) -> str:
    return ", ".join(parts) + ("," if len(parts) == 1 else "")


@_rule("slice")
def _slice(tr, eqn, a):
    starts = eqn.params["start_indices"]
    limits = eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    parts = [
        f"{int(s)}:{int(e)}" + (f":{int(k)}" if int(k) != 1 else "")
        for s, e, k in zip(starts, limits, strides)
    ]
    return tr.emit(f"{a}[{_index(parts)}]", view=True)


def _clamped_starts(tr, eqn, starts, sizes, shape):
    names = []
    for s, size, dim in zip(starts, sizes, shape):
        names.append(tr.emit(f"min(max(int({s}), 0), {int(dim) - int(size)})"))
    return names


@_rule("dynamic_slice")
def _dynamic_slice(tr, eqn, a, *starts):
    sizes = tuple(int(s) for s in eqn.params["slice_sizes"])
    src = _in(eqn)
    if len(starts) != len(sizes):
        raise UnsupportedPrimitive("dynamic_slice", "with dynamic sizes")
    idx = _clamped_starts(tr, eqn, starts, sizes, _shape(src))
    parts = [f"{i}:{i} + {s}" for i, s in zip(idx, sizes)]
    return tr.emit(f"{a}[{_index(parts)}]", view=True)


@_rule("dynamic_update_slice")
def _dynamic_update_slice(tr, eqn, a, update, *starts):
    src, upd = _in(eqn), _in(eqn, 1)
    if _is_scalar(src):
        return update
    sizes = _shape(upd)
    idx = _clamped_starts(tr, eqn, starts, sizes, _shape(src))
    out = tr.emit(f"{a}.copy()")
    parts = [f"{i}:{i} + {s}" for i, s in zip(idx, sizes)]
    tr.lines.append(f"{out}[{_index(parts)}] = {update}")
    return out


@_rule("rev")
def _rev(tr, eqn, a):
    dims = {int(d) for d in eqn.params["dimensions"]}
    parts = ["::-1" if i in dims else ":" for i in range(len(_shape(_in(eqn))))]
    return tr.emit(f"np.ascontiguousarray({a}[{_index(parts)}])")


@_rule("concatenate")
def _concatenate(tr, eqn, *args):
    axis = int(eqn.params["dimension"])
    return tr.emit(f"np.concatenate(({_index(list(args))}), axis={axis})")


@_rule("stack")
def _stack(tr, eqn, *args):
    axis = int(eqn.params["axis"])
    if _is_scalar(_in(eqn)):
        return tr.emit(f"np.array([{', '.join(args)}])")
    shape = _shape(_in(eqn))
    inter = shape[:axis] + (1,) + shape[axis:]
    parts = [_reshape(tr, a, _in(eqn, i), inter) for i, a in enumerate(args)]
    return tr.emit(f"np.concatenate(({_index(parts)}), axis={axis})")


@_rule("unstack")
def _unstack(tr, eqn, a):
    axis = int(eqn.params["axis"])
    n = _shape(_in(eqn))[axis]
    outs = []
    for i in range(n):
        parts = [":"] * axis + [str(i)]
        outs.append(tr.emit(f"{a}[{_index(parts)}]", view=True))
    return outs


@_rule("split")
def _split(tr, eqn, a):
    axis = int(eqn.params["axis"])
    outs, start = [], 0
    for size in eqn.params["sizes"]:
        parts = [":"] * axis + [f"{start}:{start + int(size)}"]
        outs.append(tr.emit(f"{a}[{_index(parts)}]", view=True))
        start += int(size)
    return outs


@_rule("pad")
def _pad(tr, eqn, a, value):
    src, out = _in(eqn), _out(eqn)
    config = [tuple(int(x) for x in c) for c in eqn.params["padding_config"]]
    shape = _shape(src)
    # Pad with the non-negative parts, then cut the negative ones off.
    buf_shape, place, cut = [], [], []
    for n, (lo, hi, interior) in zip(shape, config):
        lo_p, hi_p = max(lo, 0), max(hi, 0)
        core = n + (n - 1) * interior if n else 0
        size = lo_p + core + hi_p
        buf_shape.append(size)
        place.append(f"{lo_p}:{lo_p + core}" + (f":{interior + 1}" if interior else ""))
        cut.append(f"{max(-lo, 0)}:{size - max(-hi, 0)}")
    buf = tr.emit(f"np.full({tuple(buf_shape)}, {_np_dtype(out)}({value}))")
    if shape and all(shape):
        tr.lines.append(f"{buf}[{_index(place)}] = {a}")
    if tuple(buf_shape) == _shape(out):
        return buf
    return tr.emit(f"{buf}[{_index(cut)}]")


@_rule("iota")
def _iota(tr, eqn):
    shape = tuple(int(s) for s in eqn.params["shape"])
    d = int(eqn.params["dimension"])
    inter = tuple(shape[i] if i == d else 1 for i in range(len(shape)))
    dtype = _np_dtype(_out(eqn))
    r = f"np.arange({shape[d]}).astype({dtype}).reshape({inter})"
    return tr.emit(f"np.broadcast_to({r}, {shape}).copy()" if inter != shape else r)


# -- reductions --------------------------------------------------------------------------

_ROWS = {
    "reduce_sum": ("rt.rows_sum", "np.sum"),
    "reduce_prod": ("rt.rows_prod", "np.prod"),
    "reduce_max": ("rt.rows_max", "np.max"),
    "reduce_min": ("rt.rows_min", "np.min"),
    "reduce_and": ("rt.rows_all", "np.all"),
    "reduce_or": ("rt.rows_any", "np.any"),
}


@_rule(*_ROWS)
def _reduce(tr, eqn, a):
    src, out = _in(eqn), _out(eqn)
    axes = tuple(sorted(int(x) for x in eqn.params["axes"]))
    shape = _shape(src)
    rows, whole = _ROWS[eqn.primitive.name]
    if not axes:
        tr.views.add(a)
        return a
    if _is_scalar(out):
        return tr.emit(_cast(f"{whole}({a})", out))
    keep = tuple(i for i in range(len(shape)) if i not in axes)
    moved = a
    if keep + axes != tuple(range(len(shape))):
        moved = tr.emit(f"np.ascontiguousarray(np.transpose({a}, {keep + axes}))")
    k = math.prod(shape[i] for i in keep)
    r = math.prod(shape[i] for i in axes)
    flat = tr.emit(f"{_contiguous(moved)}.reshape(({k}, {r}))")
    return _reshape(tr, tr.emit(f"{rows}({flat})"), _vec(out, k), _shape(out))


class _Aval:
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


def _vec(aval, k):
    return _Aval((k,), aval.dtype)


@_rule("dot_general")
def _dot_general(tr, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(i) for i in x) for x in (lc, rc, lb, rb))
    la, ra, out = _in(eqn), _in(eqn, 1), _out(eqn)
    ls, rs = _shape(la), _shape(ra)
    lf = tuple(i for i in range(len(ls)) if i not in lc + lb)
    rf = tuple(i for i in range(len(rs)) if i not in rc + rb)
    b = math.prod(ls[i] for i in lb)
    m = math.prod(ls[i] for i in lf)
    k = math.prod(ls[i] for i in lc)
    n = math.prod(rs[i] for i in rf)
    dtype = np.dtype(out.dtype)
    if np.dtype(la.dtype) != dtype:
        lhs = tr.emit(_cast(lhs, _Aval(ls, dtype)))
    if np.dtype(ra.dtype) != dtype:
        rhs = tr.emit(_cast(rhs, _Aval(rs, dtype)))

    def arrange(x, aval_shape, order, shape3):
        src = _Aval(aval_shape, dtype)
        if not aval_shape:
            return tr.emit(f"np.full({shape3}, {x})")
        if order != tuple(range(len(aval_shape))):
            x = tr.emit(f"np.ascontiguousarray(np.transpose({x}, {order}))")
        return _reshape(tr, x, src, shape3)

    floats = dtype.kind in "fc"
    if b == 1:
        a2 = arrange(lhs, ls, lb + lf + lc, (m, k))
        b2 = arrange(rhs, rs, rb + rc + rf, (k, n))
        prod = tr.emit(f"rt.{'matmul' if floats else 'matmul_loops'}({a2}, {b2})")
        flat = _Aval((m, n), dtype)
    else:
        a3 = arrange(lhs, ls, lb + lf + lc, (b, m, k))
        b3 = arrange(rhs, rs, rb + rc + rf, (b, k, n))
        fn = "batched_matmul" if floats else "batched_matmul_loops"
        prod = tr.emit(f"rt.{fn}({a3}, {b3})")
        flat = _Aval((b, m, n), dtype)
    return _reshape(tr, prod, flat, _shape(out))
