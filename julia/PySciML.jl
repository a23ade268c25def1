# Julia side of the pysciml <-> juliacall bridge.
#
# This file is `include`d into a module made by `juliacall.newmodule("PySciML")`,
# so it must not declare `module PySciML` itself.  The Python side calls `forward`,
# `vjp` and `locate` (the vector field as Python callables) or `forward_native`,
# `vjp_native` and `locate_native` (the same as native kernels: C function pointers,
# see `make_native_odefunction`); `last_error` is a debugging aid.
#
# Boundary rules (see julia/NOTES.md):
#   * every array that crosses the boundary is copied (solvers reuse buffers, and
#     Python may keep or reuse its arrays);
#   * nothing here throws: failures come back as integer codes
#       0 success, 1 MaxIters, 2 DtLessThanMin, 3 non-finite / Unstable,
#       4 exception in a Python callback, 5 any other failure;
#   * Python callbacks are only ever called with Float64 data (stiff solvers, forward
#     and adjoint, use finite-difference Jacobians; adjoints use the ODEFunction
#     vjp/vjp_p hooks).

import OrdinaryDiffEq
import OrdinaryDiffEqLowOrderRK
import OrdinaryDiffEqHighOrderRK
import OrdinaryDiffEqSDIRK
import SciMLBase
import SciMLSensitivity
import ADTypes
import SparseArrays
import PythonCall
using PythonCall: Py, PyArray, pyimport, pyconvert

include("pycallbacks.jl")
include("solvers.jl")

"""
    versions()

Julia's version and those of the packages the bridge calls, as one line (printed by
`python -m pysciml julia --selftest`).
"""
versions() = "Julia $(VERSION); " * join(
    ("$(nameof(m)) $(pkgversion(m))" for m in (OrdinaryDiffEq, SciMLSensitivity,
        SciMLBase, PythonCall)), ", ")

"""
    forward(f, vjp_u, vjp_p, u0, p, t0, t1, ts, alg, rtol, atol, maxiters,
            jac_rows = Int[], jac_cols = Int[])

Solve du/dt = f(u, p, t) on (t0, t1) and return
`(ys, code, nf, naccept, nreject)` where `ys[i, :]` is the state at `ts[i]`
(a `length(ts) x length(u0)` matrix, all NaN unless `code == 0`) and `nf` is the
number of calls made to the Python `f`. (`forward_native` below: the same over native
kernels.)  `jac_rows`, `jac_cols` (1-based) give the
Jacobian's sparsity pattern, if any: implicit solvers then get it as `jac_prototype`
(see `make_odefunction`).
"""
function forward(f, vjp_u, vjp_p, u0, p, t0, t1, ts, alg, rtol, atol, maxiters,
        jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_odefunction(f, vjp_u, vjp_p, st, proto)
    return solve_forward(make, u0, p, t0, t1, ts, alg, rtol, atol, maxiters, jac_rows,
        jac_cols)
end

"""
    forward_native(f, vjp_u, vjp_p, poll, u0, p, t0, t1, ts, alg, rtol, atol, maxiters,
                   jac_rows = Int[], jac_cols = Int[])

`forward` with `f`, `vjp_u`, `vjp_p` the addresses (integers) of native kernels with
pysciml's C ABI (`make_native_odefunction`), and `poll` a Python callable that raises
to stop the solve (Ctrl-C). `nf` counts the calls made to the native `f`.
"""
function forward_native(f, vjp_u, vjp_p, poll, u0, p, t0, t1, ts, alg, rtol, atol,
        maxiters, jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_native_odefunction(as_ptr(f), as_ptr(vjp_u),
        as_ptr(vjp_p), poll, st, n, m, proto)
    return solve_forward(make, u0, p, t0, t1, ts, alg, rtol, atol, maxiters, jac_rows,
        jac_cols)
end

# The solve behind `forward` and `forward_native`: `make(st, proto, n, m)` builds the
# ODEFunction for a state of n and parameters of m values.
function solve_forward(make, u0, p, t0, t1, ts, alg, rtol, atol, maxiters, jac_rows,
        jac_cols)
    st = CallState()
    LAST_ERROR[] = ""
    ys = fill(NaN, 0, 0)
    try
        u0v = as_vec(u0)
        pv = as_vec(p)
        tsv = as_vec(ts)
        ys = fill(NaN, length(tsv), length(u0v))
        t0f = as_f64(t0)
        t1f = as_f64(t1)
        check_times(tsv, t0f, t1f)
        isempty(tsv) && return (ys, 0, 0, 0, 0)
        proto = jac_prototype(alg, jac_rows, jac_cols, length(u0v))
        prob = SciMLBase.ODEProblem(make(st, proto, length(u0v), length(pv)), u0v,
            (t0f, t1f), pv)
        sol = OrdinaryDiffEq.solve(prob, make_solver(alg); saveat = tsv,
            save_everystep = false, reltol = as_f64(rtol), abstol = as_f64(atol),
            maxiters = Int(maxiters))
        code = retcode_int(sol.retcode)
        if code == 0
            length(sol.u) == length(tsv) ||
                error("solver saved $(length(sol.u)) states for $(length(tsv)) save times")
            for i in eachindex(sol.u)
                ys[i, :] .= sol.u[i]
            end
            all(isfinite, ys) || (code = 3)
        end
        if code != 0
            fill!(ys, NaN)
            LAST_ERROR[] = "forward solve: retcode $(sol.retcode), code $code"
        end
        return (ys, code, st.nf, sol.stats.naccept, sol.stats.nreject)
    catch e
        fill!(ys, NaN)
        return (ys, failure_code!(st, e), st.nf, 0, 0)
    end
end

"""
    vjp(f, vjp_u, vjp_p, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol, atol, maxiters,
        jac_rows = Int[], jac_cols = Int[])

Adjoint of `forward`: given the cotangent `ys_bar` (`length(ts) x length(u0)`) of
`ys`, return `(du0, dp, code)` with the gradients of `sum(ys_bar .* ys)` with
respect to `u0` and `p` (positive sign; NaN unless `code == 0`).  `jac_rows`,
`jac_cols` as for `forward`. The adjoint is integrated with the forward solver
(`make_solver(alg)`: implicit ones with finite-difference Jacobians); GaussAdjoint and
QuadratureAdjoint derive the adjoint's sparsity pattern from the forward one.
"""
function vjp(f, vjp_u, vjp_p, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol, atol, maxiters,
        jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_odefunction(f, vjp_u, vjp_p, st, proto)
    return solve_vjp(make, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol, atol,
        maxiters, jac_rows, jac_cols)
end

"""
    vjp_native(f, vjp_u, vjp_p, poll, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol,
               atol, maxiters, jac_rows = Int[], jac_cols = Int[])

`vjp` over native kernels, with the arguments of `forward_native`.
"""
function vjp_native(f, vjp_u, vjp_p, poll, u0, p, t0, t1, ts, ys_bar, alg, sensealg,
        rtol, atol, maxiters, jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_native_odefunction(as_ptr(f), as_ptr(vjp_u),
        as_ptr(vjp_p), poll, st, n, m, proto)
    return solve_vjp(make, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol, atol,
        maxiters, jac_rows, jac_cols)
end

# The adjoint behind `vjp` and `vjp_native`; `make` as for `solve_forward`.
function solve_vjp(make, u0, p, t0, t1, ts, ys_bar, alg, sensealg, rtol, atol, maxiters,
        jac_rows, jac_cols)
    st = CallState()
    LAST_ERROR[] = ""
    du0 = Float64[]
    dp = Float64[]
    try
        u0v = as_vec(u0)
        pv = as_vec(p)
        tsv = as_vec(ts)
        du0 = fill(NaN, length(u0v))
        dp = fill(NaN, length(pv))
        ybar = as_mat(ys_bar)
        size(ybar) == (length(tsv), length(u0v)) ||
            throw(DimensionMismatch("ys_bar has size $(size(ybar)), expected $((length(tsv), length(u0v)))"))
        t0f = as_f64(t0)
        t1f = as_f64(t1)
        reltol = as_f64(rtol)
        abstol = as_f64(atol)
        nsteps = Int(maxiters)
        # The adjoint needs save times inside [t0, t1] with t0 < t1.
        t0f < t1f || throw(ArgumentError("vjp needs t0 < t1"))
        check_times(tsv, t0f, t1f)
        if isempty(tsv)
            fill!(du0, 0.0)
            fill!(dp, 0.0)
            return (du0, dp, 0)
        end
        proto = jac_prototype(alg, jac_rows, jac_cols, length(u0v))
        prob = SciMLBase.ODEProblem(make(st, proto, length(u0v), length(pv)), u0v,
            (t0f, t1f), pv)
        # Dense re-solve: same steps as `forward` (saveat does not change steps).
        sol = OrdinaryDiffEq.solve(prob, make_solver(alg); reltol = reltol,
            abstol = abstol, maxiters = nsteps)
        code = retcode_int(sol.retcode)
        if code != 0
            LAST_ERROR[] = "forward re-solve: retcode $(sol.retcode), code $code"
            return (du0, dp, code)
        end
        # dgdu_discrete(out, u, p, t, i) must write dg/du at ts[i] into out.
        dgdu = function (out, _u, _p, _t, i)
            copyto!(out, view(ybar, i, :))
            return nothing
        end
        g0, gp = SciMLSensitivity.adjoint_sensitivities(sol, make_solver(alg);
            t = tsv, dgdu_discrete = dgdu, sensealg = make_sensealg(sensealg, reltol, abstol),
            abstol = abstol, reltol = reltol, maxiters = nsteps)
        copyto!(du0, vec(g0))
        gp === nothing || copyto!(dp, vec(gp))
        # adjoint_sensitivities does not return the adjoint retcode (nothing in
        # SciMLSensitivity's src reads it; a MaxIters stop returns the partial state).
        # The backward solve ends at t0, where the solver always evaluates the RHS, and
        # so the vjp hook: an early stop shows up as st.tmin_vjp > t0. Every attempted
        # step calls the hook at least once, so a stop at maxiters has made at least
        # `maxiters` hook calls; an early stop with fewer is some other failure.
        stopped_early = st.tmin_vjp > t0f + 1e-8 * max(1.0, abs(t1f - t0f))
        if stopped_early
            code = st.nvjp >= nsteps ? 1 : 5
        elseif !(all(isfinite, du0) && all(isfinite, dp))
            code = 3
        end
        if code != 0
            LAST_ERROR[] = "adjoint: code $code (" * (stopped_early ?
                "the backward solve stopped at t = $(st.tmin_vjp), before t0 = $t0f, " *
                "after $(st.nvjp) vjp calls with maxiters = $nsteps" :
                "non-finite gradient") * ")"
            fill!(du0, NaN)
            fill!(dp, NaN)
        end
        return (du0, dp, code)
    catch e
        fill!(du0, NaN)
        fill!(dp, NaN)
        return (du0, dp, failure_code!(st, e))
    end
end

"""
    locate(f, vjp_u, vjp_p, g, u0, p, t0, t1, direction, alg, rtol, atol, maxiters,
           jac_rows = Int[], jac_cols = Int[])

Solve du/dt = f(u, p, t) from t0 until the event condition `g(u, p, t)` (a Python
callable returning a float) crosses zero in `direction` (-1, 0 or +1; see
`event_callback`), or t1. Return `(t_event, happened, code)`: the event time (t1 if
no event happened, or if `code != 0`), whether one happened, and a bridge code. Only
locates: pysciml then solves to the fixed time `t_event` with `forward`/`vjp`.
Other arguments as for `forward`.
"""
function locate(f, vjp_u, vjp_p, g, u0, p, t0, t1, direction, alg, rtol, atol,
        maxiters, jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_odefunction(f, vjp_u, vjp_p, st, proto)
    return solve_locate(make, g, u0, p, t0, t1, direction, alg, rtol, atol, maxiters,
        jac_rows, jac_cols)
end

"""
    locate_native(f, vjp_u, vjp_p, poll, g, u0, p, t0, t1, direction, alg, rtol, atol,
                  maxiters, jac_rows = Int[], jac_cols = Int[])

`locate` with the vector field as native kernels (the arguments of `forward_native`);
the event condition `g` stays a Python callable.
"""
function locate_native(f, vjp_u, vjp_p, poll, g, u0, p, t0, t1, direction, alg, rtol,
        atol, maxiters, jac_rows = Int[], jac_cols = Int[])
    make = (st, proto, n, m) -> make_native_odefunction(as_ptr(f), as_ptr(vjp_u),
        as_ptr(vjp_p), poll, st, n, m, proto)
    return solve_locate(make, g, u0, p, t0, t1, direction, alg, rtol, atol, maxiters,
        jac_rows, jac_cols)
end

# The terminal ContinuousCallback of an event. pysciml's rule (`FlatEvent.triggered`,
# checked on each accepted step) against DiffEqBase's (`is_event_occurrence`, with
# `interp_points = 0` the step's endpoints only): direction -1 is `old > 0 & new <= 0`
# in both; +1 is `old <= 0 & new > 0` against `old < 0 & new >= 0`; 0 is
# `sign(old) != sign(new)` against `old != 0 & old * new <= 0`. They differ only where
# `g` is exactly 0 at a step's start: at t0 in practice, which `solve_locate` handles
# (julia/NOTES.md, "Events"). `rise_at_t0`: seen as negative at t0, so that a rise
# from a zero there counts as an upward crossing, as in pysciml.
function event_callback(g::Py, st::CallState, pv::Vector{Float64}, t0::Float64,
        direction::Int, rise_at_t0::Bool)
    condition = function (u, t, integrator)
        tf = Float64(t)
        rise_at_t0 && tf == t0 && return -1.0
        return py_float(st, g, "g", to_numpy(u), to_numpy(pv), tf)
    end
    stop! = integrator -> SciMLBase.terminate!(integrator)
    # affect! runs at upward crossings, affect_neg! at downward ones; `nothing`
    # ignores that direction.
    if direction > 0
        up, down = stop!, nothing
    elseif direction < 0
        up, down = nothing, stop!
    else
        up, down = stop!, stop!
    end
    # LeftRootFind: the event time is the left end of the root's final bracket, where
    # g has not yet crossed; no saves around the affect (the solve only locates).
    return SciMLBase.ContinuousCallback(condition, up, down;
        rootfind = SciMLBase.LeftRootFind, save_positions = (false, false),
        interp_points = 0)
end

# The event location behind `locate` and `locate_native`; `make` as for
# `solve_forward`.
function solve_locate(make, g, u0, p, t0, t1, direction, alg, rtol, atol, maxiters,
        jac_rows, jac_cols)
    st = CallState()
    LAST_ERROR[] = ""
    t1f = NaN
    try
        u0v = as_vec(u0)
        pv = as_vec(p)
        t0f = as_f64(t0)
        t1f = as_f64(t1)
        dir = Int(direction)
        dir in (-1, 0, 1) || throw(ArgumentError("direction must be -1, 0 or 1, got $dir"))
        t0f == t1f && throw(ArgumentError("t0 == t1"))
        # A zero at t0: with direction 0 the first step's sign differs from it (unless
        # g stays exactly 0), so pysciml's rule triggers at t0 itself.
        g0 = py_float(st, g, "g", to_numpy(u0v), to_numpy(pv), t0f)
        g0 == 0 && dir == 0 && return (t0f, true, 0)
        cb = event_callback(g, st, pv, t0f, dir, g0 == 0 && dir > 0)
        proto = jac_prototype(alg, jac_rows, jac_cols, length(u0v))
        prob = SciMLBase.ODEProblem(make(st, proto, length(u0v), length(pv)), u0v,
            (t0f, t1f), pv)
        sol = OrdinaryDiffEq.solve(prob, make_solver(alg); callback = cb,
            save_everystep = false, reltol = as_f64(rtol), abstol = as_f64(atol),
            maxiters = Int(maxiters))
        # The callback's terminate! is the only way to ReturnCode.Terminated here;
        # the integrator then stands at the event time, saved last by the postamble.
        happened = sol.retcode == SciMLBase.ReturnCode.Terminated
        code = happened ? 0 : retcode_int(sol.retcode)
        if code != 0
            LAST_ERROR[] = "event location: retcode $(sol.retcode), code $code"
            return (t1f, false, code)
        end
        return (happened ? Float64(sol.t[end]) : t1f, happened, 0)
    catch e
        return (t1f, false, failure_code!(st, e))
    end
end
