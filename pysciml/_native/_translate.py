"""One traversal of a jaxpr, emitting Python source that Numba compiles.

Conventions of the generated code:

- a rank-0 value is a Numba scalar (`np.float64`, `np.int64`, `bool`, …), never a
  0-d array: Numba handles scalars natively and 0-d arrays poorly;
- every other value is a C-contiguous array whose shape is known here; each primitive
  becomes explicit loops over literal bounds that write a fresh `np.empty` buffer.
  Loops, not NumPy array functions: Numba compiles a loop nest in milliseconds, while
  every NumPy function it inlines (`concatenate`, `broadcast_to`, …) costs tenths of a
  second per kernel, seconds for a forward-sensitivity field;
- closed-over constants arrive as extra arguments (`c0`, `c1`, …), not as literals, so
  the source (and its disk cache) depends on their shapes only. Equations whose inputs
  are all constant (the identity basis of `jacfwd`, say) are evaluated here, by JAX,
  and become constants themselves.

Each primitive has one rule, `rule(tr, eqn, *args) -> name or list of names`, where
`args` are the operands as source text. A primitive without a rule raises
`UnsupportedPrimitive`, and the caller falls back to XLA.
"""

import math
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

_SUB_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
# Constants larger than this are not folded (they would become kernel arguments).
_FOLD_MAX_SIZE = 1 << 22


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


class _Const:
    """A value known at translation time; it gets a kernel argument when read."""

    def __init__(self, value):
        self.value = np.asarray(value)
        self.name: "str | None" = None


class _Lazy:
    """An array not yet written to memory: `expr(idx)` is the source of its element at
    the index expressions `idx`. Elementwise operations and index maps (slice,
    broadcast, transpose, …) are lazy, so chains of them fuse into the loop nest of
    whatever consumes them: fewer loops, fewer buffers, and Numba compiles a kernel
    several times faster. `cheap` lazies (index maps only) may be re-read; others are
    written to a buffer before a second read."""

    def __init__(self, aval, expr, cheap: bool):
        self.aval, self.expr, self.cheap = aval, expr, cheap
        self.name: "str | None" = None


class Translator:
    """Emits the body of one kernel. `lines` is the body; `consts` the constant
    arrays, in argument order after the kernel's own inputs."""

    def __init__(self):
        self.lines: list[str] = []
        self.consts: list[np.ndarray] = []
        self._env: dict[Any, Any] = {}
        self._count = 0
        # Names of values that may alias a kernel input (views): copied on return.
        self.views: set[str] = set()

    def body(self, returned: list[str]) -> list[str]:
        """`lines` without the statements whose results are never read (a slice that
        only fed a scalar read, say). A statement is a top-level line with its
        indented block; it defines the names it assigns or writes into."""
        import re

        units: list[list[str]] = []
        for line in self.lines:
            if line.startswith(" ") and units:
                units[-1].append(line)
            else:
                units.append([line])
        used = {n for r in returned for n in re.findall(r"\b[vc]\d+\b", r)}
        keep = []
        for unit in reversed(units):
            text = "\n".join(unit)
            defined = set(re.findall(r"^\s*(v\d+)(?:\[[^\]]*\])?\s*=", text, re.M))
            if defined and not defined & used:
                continue
            keep.append(unit)
            used.update(re.findall(r"\b[vc]\d+\b", text))
        return [line for unit in reversed(keep) for line in unit]

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

    def alloc(self, aval) -> str:
        return self.emit(f"np.empty({_shape(aval)}, {_np_dtype(aval)})")

    def loop(self, shape, body: list[str], idx: "list[str] | None" = None) -> None:
        """Emits `for i0 in range(shape[0]): for i1 ...: body`."""
        idx = idx or [f"i{k}" for k in range(len(shape))]
        for depth, (i, n) in enumerate(zip(idx, shape)):
            self.lines.append("    " * depth + f"for {i} in range({n}):")
        pad = "    " * len(shape)
        self.lines.extend(pad + line for line in body)

    def materialize(self, value) -> str:
        """The name of an array value, writing a lazy one to a buffer first."""
        if not isinstance(value, _Lazy):
            return value
        if value.name is None:
            shape = _shape(value.aval)
            idx = [f"i{k}" for k in range(len(shape))]
            name = self.alloc(value.aval)
            self.loop(shape, [f"{name}[{_index(idx)}] = {value.expr(idx)}"], idx)
            value.name = name
        return value.name

    def value(self, atom):
        """An operand as rules take it: a name, or a `_Lazy`."""
        if isinstance(atom, jcore.Literal) or not isinstance(self._env.get(atom), _Lazy):
            return self.read(atom)
        return self._env[atom]

    def read(self, atom) -> str:
        if isinstance(atom, jcore.Literal):
            return _literal(atom.val, atom.aval)
        value = self._env[atom]
        if isinstance(value, _Lazy):
            return self.materialize(value)
        if isinstance(value, _Const):
            if value.name is None:
                if value.value.ndim == 0:
                    value.name = _literal(value.value, value.value)
                else:
                    self.consts.append(np.ascontiguousarray(value.value))
                    value.name = f"c{len(self.consts) - 1}"
            return value.name
        return value

    def _known(self, atom):
        if isinstance(atom, jcore.Literal):
            return np.asarray(atom.val, dtype=atom.aval.dtype)
        value = self._env.get(atom)
        return value.value if isinstance(value, _Const) else None

    # -- traversal ---------------------------------------------------------------

    def run(self, jaxpr, consts, args: list) -> list[str]:
        """Translates `jaxpr` applied to `args` (source names), inlining calls.
        Returns the source names of its outputs."""
        for var, value in zip(jaxpr.constvars, consts):
            self._env[var] = _Const(value)
        for var, name in zip(jaxpr.invars, args, strict=True):
            self._env[var] = name
        self._eqns(jaxpr)
        return [self.read(v) for v in jaxpr.outvars]

    def _eqns(self, jaxpr):
        uses: dict[Any, int] = {}
        for eqn in jaxpr.eqns:
            for v in eqn.invars:
                if not isinstance(v, jcore.Literal):
                    uses[v] = uses.get(v, 0) + 1
        for v in jaxpr.outvars:
            if not isinstance(v, jcore.Literal):
                uses[v] = uses.get(v, 0) + 2  # returned: never left lazy
        for eqn in jaxpr.eqns:
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                outs = self._inline(sub, eqn.invars)
            elif (folded := self._fold(eqn)) is not None:
                outs = folded
            else:
                rule = RULES.get(eqn.primitive.name)
                if rule is None:
                    raise UnsupportedPrimitive(eqn.primitive.name)
                if eqn.primitive.name in LAZY_OPERANDS:
                    args = [self.value(v) for v in eqn.invars]
                else:
                    args = [self.read(v) for v in eqn.invars]
                outs = rule(self, eqn, *args)
                outs = outs if isinstance(outs, list) else [outs]
                for var, out in zip(eqn.outvars, outs):
                    # A computed lazy read twice would be computed twice: write it.
                    if (isinstance(out, _Lazy) and not out.cheap
                            and uses.get(var, 0) > 1):
                        self.materialize(out)
            for var, out in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    self._env[var] = out

    def _inline(self, sub, invars):
        """A call's sub-jaxpr, in its own scope, on the caller's values."""
        jaxpr, consts = sub
        ins = [_Const(self._known(v)) if isinstance(v, jcore.Literal) else self._env[v]
               for v in invars]
        outer, self._env = self._env, {}
        try:
            for var, value in zip(jaxpr.constvars, consts):
                self._env[var] = _Const(value)
            for var, value in zip(jaxpr.invars, ins, strict=True):
                self._env[var] = value
            self._eqns(jaxpr)
            return [_Const(self._known(v)) if isinstance(v, jcore.Literal)
                    else self._env[v] for v in jaxpr.outvars]
        finally:
            self._env = outer

    def _fold(self, eqn):
        """The outputs of `eqn` as `_Const`s when all its inputs are known, else None."""
        if eqn.primitive.name not in RULES:
            return None
        known = [self._known(v) for v in eqn.invars]
        if any(k is None for k in known):
            return None
        if any(math.prod(_shape(v.aval)) > _FOLD_MAX_SIZE for v in eqn.outvars):
            return None
        # Concrete even when translation happens while an outer function is traced
        # (`native_rhs=True` checks at trace time).
        with jax.enable_x64(True), jax.ensure_compile_time_eval():
            outs = eqn.primitive.bind(*known, **eqn.params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        return [_Const(np.asarray(o)) for o in outs]


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


def _index(parts) -> str:
    return ", ".join(str(p) for p in parts)


def _at(value, aval, idx) -> str:
    """Element `idx` of an operand (a name or a `_Lazy`); a scalar operand is its own
    element."""
    if isinstance(value, _Lazy):
        if value.name is None:
            # Index expressions compose (a slice of a reversal): parenthesise them.
            idx = [i if i.isidentifier() or i.isdigit() else f"({i})" for i in idx]
            return f"({value.expr(idx)})"
        value = value.name
    return value if _is_scalar(aval) else f"{value}[{_index(idx)}]"


def _scalar_cast(expr: str, aval) -> str:
    # Numba promotes small integers to int64 and keeps bools as bool: cast where the
    # dtype would otherwise differ from JAX's.
    dtype = np.dtype(aval.dtype)
    if dtype in (np.float64, np.int64, np.bool_):
        return expr
    return f"{_np_dtype(aval)}({expr})"


def elementwise(tr, eqn, args, fn, *, prelude=None):
    """The rule for an elementwise primitive: `fn(elements) -> expression`, with
    `prelude(elements) -> (lines, elements)` for expressions that need statements."""
    out = _out(eqn)
    avals = [v.aval for v in eqn.invars]
    if _is_scalar(out):
        elems = list(args)
        if prelude is not None:
            lines, elems = prelude(elems)
            tr.lines.extend(lines)
        return tr.emit(_scalar_cast(fn(elems), out))
    shape = _shape(out)
    if prelude is not None:  # statements per element: a loop of its own
        idx = [f"i{k}" for k in range(len(shape))]
        body, elems = prelude(_elements(args, avals, idx, shape))
        name = tr.alloc(out)
        tr.loop(shape, body + [f"{name}[{_index(idx)}] = {fn(elems)}"], idx)
        return name
    return _Lazy(out, lambda idx: fn(_elements(args, avals, idx, shape)), cheap=False)


def _elements(args, avals, idx, shape):
    # Operands have the output's rank (or none); a unit dimension broadcasts, as
    # jaxprs allow (`mul a:f64[4,1] b:f64[1,4]`).
    return [
        _at(a, av, [i if n == m else "0" for i, n, m in zip(idx, _shape(av), shape)])
        for a, av in zip(args, avals)
    ]


def _template_rule(template):
    def rule(tr, eqn, *args):
        return elementwise(
            tr, eqn, args, lambda e: template.format(*e, a=e[0], b=e[-1])
        )

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
    "pow": "{a} ** {b}",
    "shift_left": "{a} << {b}",
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
    "abs": "abs({a})",
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
    RULES[_name] = _template_rule(_template)


@_rule("clamp")
def _clamp(tr, eqn, lo, x, hi):
    # np.minimum/maximum, as XLA's clamp propagates NaN.
    return elementwise(
        tr, eqn, (lo, x, hi), lambda e: f"np.minimum(np.maximum({e[1]}, {e[0]}), {e[2]})"
    )


@_rule("and", "or", "xor")
def _logical(tr, eqn, a, b):
    op = {"and": "&", "or": "|", "xor": "^"}[eqn.primitive.name]
    if _kind(_out(eqn)) == "b":
        op = {"and": "and", "or": "or", "xor": "!="}[eqn.primitive.name]
    return elementwise(tr, eqn, (a, b), lambda e: f"({e[0]} {op} {e[1]})")


@_rule("not")
def _not(tr, eqn, a):
    if _kind(_out(eqn)) == "b":
        return elementwise(tr, eqn, (a,), lambda e: f"not {e[0]}")
    return elementwise(tr, eqn, (a,), lambda e: f"~{e[0]}")


@_rule("div")
def _div(tr, eqn, a, b):
    if _kind(_out(eqn)) in "iu":
        return elementwise(tr, eqn, (a, b), lambda e: f"rt.idiv({e[0]}, {e[1]})")
    return elementwise(tr, eqn, (a, b), lambda e: f"{e[0]} / {e[1]}")


@_rule("rem")
def _rem(tr, eqn, a, b):
    if _kind(_out(eqn)) in "iu":
        return elementwise(tr, eqn, (a, b), lambda e: f"rt.irem({e[0]}, {e[1]})")
    return elementwise(tr, eqn, (a, b), lambda e: f"np.fmod({e[0]}, {e[1]})")


@_rule("integer_pow")
def _integer_pow(tr, eqn, a):
    y = int(eqn.params["y"])
    if y == 0:
        return elementwise(tr, eqn, (a,), lambda e: "1")

    def prelude(elems):
        # Repeated squaring, as XLA does (pow() may differ in the last bit). Fresh
        # names: Numba types each name once per function.
        lines, k, acc, base = [], abs(y), None, elems[0]
        while True:
            if k & 1:
                if acc is None:
                    acc = base
                else:
                    name = f"_p{tr.fresh()}"
                    lines.append(f"{name} = {acc} * {base}")
                    acc = name
            k >>= 1
            if not k:
                break
            name = f"_p{tr.fresh()}"
            lines.append(f"{name} = {base} * {base}")
            base = name
        return lines, [f"1.0 / {acc}" if y < 0 else acc]

    return elementwise(tr, eqn, (a,), lambda e: e[0], prelude=prelude)


@_rule("round")
def _round(tr, eqn, a):
    # rounding_method 0: halves away from zero; 1: to even (NumPy's own rule).
    fn = "rt.round_away" if int(eqn.params["rounding_method"]) == 0 else "np.round"
    return elementwise(tr, eqn, (a,), lambda e: f"{fn}({e[0]})")


@_rule("copy", "copy_p", "stop_gradient", "optimization_barrier")
def _identity(tr, eqn, *args):
    # Aliases of their operands: copied on return if they leave the kernel.
    for a in args:
        if isinstance(a, str):
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


@_rule("convert_element_type")
def _convert(tr, eqn, a):
    src, dst = _in(eqn), _out(eqn)
    if np.dtype(src.dtype) == np.dtype(dst.dtype):
        if isinstance(a, str):
            tr.views.add(a)
        return a
    if _kind(dst) == "b":
        return elementwise(tr, eqn, (a,), lambda e: f"{e[0]} != 0")
    return elementwise(tr, eqn, (a,), lambda e: f"{_np_dtype(dst)}({e[0]})")


@_rule("select_n")
def _select_n(tr, eqn, pred, *cases):
    n = len(cases)

    def fn(e):
        p, cs = e[0], e[1:]
        if n == 2:
            return f"({cs[1]} if {p} else {cs[0]})"
        expr = cs[-1]
        for i in range(n - 2, -1, -1):
            expr = f"({cs[i]} if {p} == {i} else {expr})"
        return expr

    return elementwise(tr, eqn, (pred, *cases), fn)


# -- shapes ----------------------------------------------------------------------------


def _fill(tr, aval, value: str) -> str:
    name = tr.alloc(aval)
    tr.loop(_shape(aval), [f"{name}[{_index([f'i{k}' for k in range(len(aval.shape))])}]"
                           f" = {value}"])
    return name


def _reshape(tr, a: str, src, out) -> str:
    """`a` (of aval `src`) reshaped to `out`'s shape, respecting the scalar convention.
    Every array is C-contiguous, so a reshape is a view."""
    shape = _shape(out)
    if _is_scalar(src):
        return _fill(tr, out, a) if shape else a
    if isinstance(a, _Lazy):
        if not shape:  # a one-element array read as a scalar: its element
            return tr.emit(_at(a, src, ["0"] * len(src.shape)))
        if _shape(src) == shape:
            return a
        a = tr.materialize(a)
    if not shape:
        return tr.emit(f"{a}[{_index(['0'] * len(src.shape))}]")
    if _shape(src) == shape:
        return a
    return tr.emit(f"{a}.reshape({shape})", view=True)


@_rule("reshape", "squeeze")
def _reshape_rule(tr, eqn, a, *dynamic):
    if dynamic or (
        eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None
    ):
        raise UnsupportedPrimitive("reshape", "with dynamic shapes or dimensions")
    return _reshape(tr, a, _in(eqn), _out(eqn))


def _copy_loop(tr, out, src_aval, a, index_of):
    """`out[idx] = a[index_of(idx)]`: an index map, left lazy (and cheap: re-reading
    it is index arithmetic), over a computed lazy only once that is written."""
    shape = _shape(out)
    if isinstance(a, _Lazy) and not a.cheap:
        a = tr.materialize(a)
    if not shape:
        return tr.emit(_at(a, src_aval, index_of([])))
    return _Lazy(out, lambda idx: _at(a, src_aval, index_of(idx)), cheap=True)


@_rule("broadcast_in_dim")
def _broadcast_in_dim(tr, eqn, a, *dynamic):
    if dynamic:
        raise UnsupportedPrimitive("broadcast_in_dim", "with dynamic shapes")
    src, out = _in(eqn), _out(eqn)
    dims = tuple(int(d) for d in eqn.params["broadcast_dimensions"])
    if _is_scalar(src):
        return _fill(tr, out, a) if out.shape else a
    src_shape, shape = _shape(src), _shape(out)
    if math.prod(src_shape) == math.prod(shape):
        return _reshape(tr, a, src, out)  # only unit dimensions added

    def index_of(idx):
        return ["0" if src_shape[j] == 1 and shape[d] != 1 else idx[d]
                for j, d in enumerate(dims)]

    return _copy_loop(tr, out, src, a, index_of)


@_rule("transpose")
def _transpose(tr, eqn, a):
    perm = tuple(int(i) for i in eqn.params["permutation"])
    if perm == tuple(range(len(perm))):
        tr.views.add(a)
        return a

    def index_of(idx):
        src = [None] * len(perm)
        for k, p in enumerate(perm):
            src[p] = idx[k]
        return src

    return _copy_loop(tr, _out(eqn), _in(eqn), a, index_of)


@_rule("slice")
def _slice(tr, eqn, a):
    starts = [int(s) for s in eqn.params["start_indices"]]
    strides = [int(k) for k in (eqn.params["strides"] or (1,) * len(starts))]

    def index_of(idx):
        return [
            (f"{s} + {i}" if k == 1 else f"{s} + {k} * {i}") if s else
            (i if k == 1 else f"{k} * {i}")
            for i, s, k in zip(idx, starts, strides)
        ]

    return _copy_loop(tr, _out(eqn), _in(eqn), a, index_of)


@_rule("rev")
def _rev(tr, eqn, a):
    dims = {int(d) for d in eqn.params["dimensions"]}
    shape = _shape(_in(eqn))
    return _copy_loop(
        tr, _out(eqn), _in(eqn), a,
        lambda idx: [f"{shape[k] - 1} - {i}" if k in dims else i
                     for k, i in enumerate(idx)],
    )


def _clamped_starts(tr, starts, sizes, shape):
    return [tr.emit(f"min(max(int({s}), 0), {int(d) - int(z)})")
            for s, z, d in zip(starts, sizes, shape)]


@_rule("dynamic_slice")
def _dynamic_slice(tr, eqn, a, *starts):
    sizes = tuple(int(s) for s in eqn.params["slice_sizes"])
    if len(starts) != len(sizes):
        raise UnsupportedPrimitive("dynamic_slice", "with dynamic sizes")
    offs = _clamped_starts(tr, starts, sizes, _shape(_in(eqn)))
    return _copy_loop(tr, _out(eqn), _in(eqn), a,
                      lambda idx: [f"{o} + {i}" for o, i in zip(offs, idx)])


@_rule("dynamic_update_slice")
def _dynamic_update_slice(tr, eqn, a, update, *starts):
    src, upd = _in(eqn), _in(eqn, 1)
    if _is_scalar(src):
        return update
    sizes = _shape(upd)
    offs = _clamped_starts(tr, starts, sizes, _shape(src))
    out = tr.emit(f"{a}.copy()")
    idx = [f"i{k}" for k in range(len(sizes))]
    target = [f"{o} + {i}" for o, i in zip(offs, idx)]
    tr.loop(sizes, [f"{out}[{_index(target)}] = {_at(update, upd, idx)}"], idx)
    return out


def _place(tr, out_name, parts, axis):
    """Writes arrays `parts` (name, aval) one after the other along `axis`."""
    offset = 0
    for name, aval in parts:
        shape = _shape(aval)
        idx = [f"i{k}" for k in range(len(shape))]
        target = list(idx)
        target[axis] = f"{offset} + {idx[axis]}" if offset else idx[axis]
        tr.loop(shape, [f"{out_name}[{_index(target)}] = {_at(name, aval, idx)}"], idx)
        offset += shape[axis]


@_rule("concatenate")
def _concatenate(tr, eqn, *args):
    out = tr.alloc(_out(eqn))
    _place(tr, out, list(zip(args, [v.aval for v in eqn.invars])),
           int(eqn.params["dimension"]))
    return out


@_rule("stack")
def _stack(tr, eqn, *args):
    axis = int(eqn.params["axis"])
    out_aval = _out(eqn)
    out = tr.alloc(out_aval)
    src = _in(eqn)
    shape = _shape(src)
    for j, a in enumerate(args):
        idx = [f"i{k}" for k in range(len(shape))]
        target = idx[:axis] + [str(j)] + idx[axis:]
        tr.loop(shape, [f"{out}[{_index(target)}] = {_at(a, src, idx)}"], idx)
    return out


@_rule("unstack")
def _unstack(tr, eqn, a):
    axis = int(eqn.params["axis"])
    n = _shape(_in(eqn))[axis]
    return [
        _copy_loop(tr, _out(eqn, j), _in(eqn), a,
                   lambda idx, j=j: idx[:axis] + [str(j)] + idx[axis:])
        for j in range(n)
    ]


@_rule("split")
def _split(tr, eqn, a):
    axis = int(eqn.params["axis"])
    outs, start = [], 0
    for j, size in enumerate(eqn.params["sizes"]):
        outs.append(_copy_loop(
            tr, _out(eqn, j), _in(eqn), a,
            lambda idx, s=start: [f"{s} + {i}" if k == axis and s else i
                                  for k, i in enumerate(idx)],
        ))
        start += int(size)
    return outs


@_rule("pad")
def _pad(tr, eqn, a, value):
    src, out_aval = _in(eqn), _out(eqn)
    config = [tuple(int(x) for x in c) for c in eqn.params["padding_config"]]
    out = _fill(tr, out_aval, value)
    shape, out_shape = _shape(src), _shape(out_aval)
    if not all(shape):
        return out
    # Operand entry i goes to lo + (interior + 1) * i; negative padding cuts entries
    # off, so those positions are tested against the output's bounds.
    idx = [f"i{k}" for k in range(len(shape))]
    body, target, guards = [], [], []
    for k, (lo, hi, interior) in enumerate(config):
        step = interior + 1
        pos = (f"{lo} + " if lo else "") + (f"{step} * {idx[k]}" if step != 1 else idx[k])
        body.append(f"j{k} = {pos}")
        target.append(f"j{k}")
        if lo < 0 or hi < 0:
            guards.append(f"0 <= j{k} < {out_shape[k]}")
    store = f"{out}[{_index(target)}] = {_at(a, src, idx)}"
    if guards:
        body += [f"if {' and '.join(guards)}:", "    " + store]
    else:
        body.append(store)
    tr.loop(shape, body, idx)
    return out


@_rule("iota")
def _iota(tr, eqn):
    out = _out(eqn)
    d = int(eqn.params["dimension"])
    return _Lazy(out, lambda idx: f"{_np_dtype(out)}({idx[d]})", cheap=True)


# -- reductions --------------------------------------------------------------------------

_REDUCE = {
    "reduce_sum": ("{acc} + {x}", "0"),
    "reduce_prod": ("{acc} * {x}", "1"),
    "reduce_max": ("np.maximum({acc}, {x})", None),
    "reduce_min": ("np.minimum({acc}, {x})", None),
    "reduce_and": ("({acc} and {x})", "True"),
    "reduce_or": ("({acc} or {x})", "False"),
}


def _identity_of(name, aval) -> str:
    combine, init = _REDUCE[name]
    if init is not None:
        return init if _kind(aval) == "b" else f"{_np_dtype(aval)}({init})"
    dtype = np.dtype(aval.dtype)
    big = "np.inf" if dtype.kind == "f" else str(np.iinfo(dtype).max)
    small = "-np.inf" if dtype.kind == "f" else str(np.iinfo(dtype).min)
    return f"{_np_dtype(aval)}({small if name == 'reduce_max' else big})"


@_rule(*_REDUCE)
def _reduce(tr, eqn, a):
    src, out = _in(eqn), _out(eqn)
    axes = {int(x) for x in eqn.params["axes"]}
    if not axes:
        if isinstance(a, str):
            tr.views.add(a)
        return a
    name = eqn.primitive.name
    combine = _REDUCE[name][0]
    shape = _shape(src)
    idx = [f"i{k}" for k in range(len(shape))]
    kept = [i for k, i in enumerate(idx) if k not in axes]
    init = _identity_of(name, out)
    if _is_scalar(out):
        acc = tr.emit(init)
        tr.loop(shape, [f"{acc} = {combine.format(acc=acc, x=_at(a, src, idx))}"], idx)
        return acc
    res = _fill(tr, out, init)
    cell = f"{res}[{_index(kept)}]"
    tr.loop(shape, [f"{cell} = {combine.format(acc=cell, x=_at(a, src, idx))}"], idx)
    return res


@_rule("dot_general")
def _dot_general(tr, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(i) for i in x) for x in (lc, rc, lb, rb))
    la, ra, out = _in(eqn), _in(eqn, 1), _out(eqn)
    # Each operand entry is read many times: computed lazies are written first.
    lhs, rhs = (tr.materialize(x) if isinstance(x, _Lazy) and not x.cheap else x
                for x in (lhs, rhs))
    ls, rs = _shape(la), _shape(ra)
    lf = [i for i in range(len(ls)) if i not in lc + lb]
    rf = [i for i in range(len(rs)) if i not in rc + rb]
    # Output indices: batch, lhs free, rhs free (XLA's order); k*: contraction.
    nb = len(lb)
    o = [f"i{k}" for k in range(len(_shape(out)))]
    kk = [f"k{k}" for k in range(len(lc))]
    li, ri = [None] * len(ls), [None] * len(rs)
    for j, (bl, br) in enumerate(zip(lb, rb)):
        li[bl] = ri[br] = o[j]
    for j, d in enumerate(lf):
        li[d] = o[nb + j]
    for j, d in enumerate(rf):
        ri[d] = o[nb + len(lf) + j]
    for j, (cl, cr) in enumerate(zip(lc, rc)):
        li[cl] = ri[cr] = kk[j]
    dtype = _np_dtype(out)
    term = f"{_at(lhs, la, li)} * {_at(rhs, ra, ri)}"
    acc = f"_s{tr.fresh()}"  # one name per product: Numba types each name once
    inner = [f"{acc} = {dtype}(0)"]
    depth = ""
    for k, c in zip(kk, lc):
        inner.append(f"{depth}for {k} in range({ls[c]}):")
        depth += "    "
    inner.append(f"{depth}{acc} += {term}")
    if _is_scalar(out):
        tr.lines.extend(inner)
        return tr.emit(acc)
    res = tr.alloc(out)
    tr.loop(_shape(out), inner + [f"{res}[{_index(o)}] = {acc}"], o)
    return res


# -- gather and scatter (indexing, and its transpose) ------------------------------------


def _mode(eqn) -> str:
    mode = str(eqn.params["mode"]).rsplit(".", 1)[-1].upper()
    return "clip" if "CLIP" in mode else ("fill" if "FILL" in mode else "promise")


def _window_index(indices, ix_aval, batch_idx, smap, uppers, window, offsets, *,
                  clamp: bool, check: bool):
    """The operand index of one gather/scatter element: the start read from
    `indices` at `batch_idx` for the dimensions `smap` (clamped into `[0, upper]`
    and/or checked against it), plus the window offsets. Returns `(statements, the
    in-bounds conditions, the index)`."""
    body, valid = [], []
    index = ["0"] * len(uppers)
    for k, d in enumerate(smap):
        raw, s = f"_r{k}", f"_g{k}"
        body.append(f"{raw} = int({_at(indices, ix_aval, batch_idx + [str(k)])})")
        if check:  # on the start as given: the clamped one is always in bounds
            valid.append(f"0 <= {raw} <= {uppers[d]}")
        body.append(f"{s} = min(max({raw}, 0), {uppers[d]})" if clamp else f"{s} = {raw}")
        index[d] = s
    for d, off in zip(window, offsets):
        index[d] = off if index[d] == "0" else f"{index[d]} + {off}"
    return body, valid, index


@_rule("gather")
def _gather(tr, eqn, operand, indices):
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()) or getattr(
        dn, "start_indices_batching_dims", ()
    ):
        raise UnsupportedPrimitive("gather", "with batching dimensions")
    op_aval, ix_aval, out = _in(eqn), _in(eqn, 1), _out(eqn)
    op_shape, out_shape = _shape(op_aval), _shape(out)
    operand, indices = (tr.materialize(x) if isinstance(x, _Lazy) and not x.cheap
                        else x for x in (operand, indices))
    sizes = [int(s) for s in eqn.params["slice_sizes"]]
    offset_dims = [int(d) for d in dn.offset_dims]
    collapsed = {int(d) for d in dn.collapsed_slice_dims}
    smap = [int(d) for d in dn.start_index_map]
    mode = _mode(eqn)
    o = [f"i{k}" for k in range(len(out_shape))]
    batch_pos = [k for k in range(len(out_shape)) if k not in offset_dims]
    b = [o[k] for k in batch_pos]
    window = [d for d in range(len(op_shape)) if d not in collapsed]
    # FILL_OR_DROP: an out-of-bounds start gives the fill value; else it is clamped.
    body, valid, src = _window_index(
        indices, ix_aval, b, smap, [n - z for n, z in zip(op_shape, sizes)], window,
        [o[offset_dims[j]] for j in range(len(window))], clamp=True,
        check=mode == "fill",
    )
    value = _at(operand, op_aval, src)
    if valid:
        fill = _literal(eqn.params["fill_value"] if eqn.params.get("fill_value")
                        is not None else (np.nan if _kind(out) == "f" else 0), out)
        value = f"({value} if {' and '.join(valid)} else {fill})"
    if not out_shape:
        tr.lines.extend(body)
        return tr.emit(value)
    res = tr.alloc(out)
    tr.loop(out_shape, body + [f"{res}[{_index(o)}] = {value}"], o)
    return res


def _scatter(tr, eqn, operand, indices, updates, combine):
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()) or getattr(
        dn, "scatter_indices_batching_dims", ()
    ):
        raise UnsupportedPrimitive(eqn.primitive.name, "with batching dimensions")
    op_aval, ix_aval, up_aval = _in(eqn), _in(eqn, 1), _in(eqn, 2)
    op_shape, up_shape = _shape(op_aval), _shape(up_aval)
    window_dims = [int(d) for d in dn.update_window_dims]
    inserted = {int(d) for d in dn.inserted_window_dims}
    smap = [int(d) for d in dn.scatter_dims_to_operand_dims]
    mode = _mode(eqn)
    u = [f"i{k}" for k in range(len(up_shape))]
    b = [u[k] for k in range(len(up_shape)) if k not in window_dims]
    window = [d for d in range(len(op_shape)) if d not in inserted]
    wsize = {d: 1 for d in range(len(op_shape))}
    for j, d in enumerate(window):
        wsize[d] = up_shape[window_dims[j]]
    res = tr.emit(f"{operand}.copy()") if op_shape else None
    if res is None:
        raise UnsupportedPrimitive(eqn.primitive.name, "on a scalar operand")
    # XLA drops an update whose window leaves the operand, unless the mode clips.
    body, valid, dst = _window_index(
        indices, ix_aval, b, smap, [op_shape[d] - wsize[d] for d in range(len(op_shape))],
        window, [u[window_dims[j]] for j in range(len(window))], clamp=mode == "clip",
        check=mode != "clip",
    )
    cell = f"{res}[{_index(dst)}]"
    store = f"{cell} = {combine.format(acc=cell, x=_at(updates, up_aval, u))}"
    if valid:
        body += [f"if {' and '.join(valid)}:", "    " + store]
    else:
        body.append(store)
    if up_shape:
        tr.loop(up_shape, body, u)
    else:
        tr.lines.extend(body)
    return res


@_rule("scatter-add", "scatter_add")
def _scatter_add(tr, eqn, operand, indices, updates):
    return _scatter(tr, eqn, operand, indices, updates, "{acc} + {x}")


@_rule("scatter")
def _scatter_set(tr, eqn, operand, indices, updates):
    # Several writes to one place: XLA leaves the winner unspecified; here, the last.
    return _scatter(tr, eqn, operand, indices, updates, "{x}")


# Rules that take `_Lazy` operands (they read them through `_at`, or handle them);
# every other rule gets names.
LAZY_OPERANDS = {
    name for name, rule in RULES.items()
    if name not in ("dynamic_update_slice", "scatter", "scatter-add", "scatter_add")
}
