# Conversions at the Python boundary and the in-place wrappers around the
# Python callables.  Included by PySciML.jl.

const NUMPY = pyimport("numpy")

# Message of the most recent failure (for debugging from Python).
const LAST_ERROR = Ref("")
last_error() = LAST_ERROR[]

# Bookkeeping for one `forward` / `vjp` call, shared by its wrappers (Python callables
# or native kernels alike).
mutable struct CallState
    nf::Int                            # calls made to f
    nvjp::Int                          # calls made to vjp_u
    tmin_vjp::Float64                  # smallest t at which vjp_u was called
    pyerror::Union{Nothing,String}     # first exception raised by a Python callback
    shapeerror::Union{Nothing,String}  # first result of the wrong shape or type
    nonfinite::Union{Nothing,String}   # first native kernel that wrote a non-finite value
    lastpoll::UInt64                   # time_ns() of the last `poll!` (native kernels)
end
CallState() = CallState(0, 0, Inf, nothing, nothing, nothing, time_ns())

# ---- Python -> Julia (always a fresh copy) --------------------------------------
# juliacall turns numpy arrays into PyArray (a view) and other objects into Py.

function as_vec(x::AbstractVector)
    v = Vector{Float64}(undef, length(x))
    copyto!(v, x)
    return v
end
as_vec(x::Py) = pyconvert(Vector{Float64}, x)
as_vec(x) = throw(ArgumentError("expected a 1-d array, got $(typeof(x))"))

as_mat(x::AbstractMatrix) = Matrix{Float64}(x)
as_mat(x::Py) = pyconvert(Matrix{Float64}, x)
as_mat(x) = throw(ArgumentError("expected a 2-d array, got $(typeof(x))"))

as_f64(x::Real) = Float64(x)
as_f64(x::Py) = pyconvert(Float64, x)

# ---- Julia -> Python -------------------------------------------------------------
# Copy into a fresh Julia vector and hand numpy a view of that copy: the solver may
# overwrite `x` later, and the Python function may keep what it was given.
function to_numpy(x::AbstractVector)
    v = Vector{Float64}(undef, length(x))
    copyto!(v, x)
    return NUMPY.asarray(v)
end

# Call a Python function and copy its 1-d result into `out`. A Python exception is
# recorded as a callback error (code 4: the Python side holds the exception itself); a
# result of the wrong shape or type as a shape error (code 5, with the message), since
# Julia would only say `DimensionMismatch` deep inside the solver.
function py_into!(out::AbstractVector, st::CallState, fn::Py, name::String, args...)
    r = try
        fn(args...)
    catch e
        st.pyerror === nothing && (st.pyerror = "$name: " * sprint(showerror, e))
        rethrow()
    end
    a = try
        PyArray(r)
    catch e
        msg = "$name returned a $(pytype_name(r)), not a NumPy array of $(length(out)) " *
              "float64 values"
        st.shapeerror === nothing && (st.shapeerror = msg)
        throw(DimensionMismatch(msg))
    end
    if !(ndims(a) == 1 && length(a) == length(out))
        msg = "$name returned an array of shape $(size(a)); the solver expects " *
              "($(length(out)),)"
        st.shapeerror === nothing && (st.shapeerror = msg)
        throw(DimensionMismatch(msg))
    end
    copyto!(out, a)
    return nothing
end

# Call a Python function that returns one float (the event condition) and return it
# as a Float64. Exceptions are recorded as in `py_into!` (code 4); a result that is no
# float is a shape error (code 5), a non-finite one ends the solve as code 3 (a sign
# test on NaN would silently see no crossing).
function py_float(st::CallState, fn::Py, name::String, args...)
    r = try
        fn(args...)
    catch e
        st.pyerror === nothing && (st.pyerror = "$name: " * sprint(showerror, e))
        rethrow()
    end
    v = try
        pyconvert(Float64, r)
    catch e
        msg = "$name returned a $(pytype_name(r)), not a float"
        st.shapeerror === nothing && (st.shapeerror = msg)
        throw(ArgumentError(msg))
    end
    if !isfinite(v)
        msg = "$name returned $v"
        st.nonfinite === nothing && (st.nonfinite = msg)
        throw(DomainError(v, msg))
    end
    return v
end

pytype_name(r) = try
    pyconvert(String, r.__class__.__name__)
catch
    string(typeof(r))
end

as_ints(x::AbstractVector) = Vector{Int}(x)
as_ints(x::Py) = pyconvert(Vector{Int}, x)

# The Jacobian's sparsity pattern as a `jac_prototype`, for implicit solvers only
# (explicit ones never form a Jacobian); `nothing` when Python gave no pattern.
# SciMLBase's ODEFunction defaults `sparsity` to `jac_prototype`, and
# OrdinaryDiffEqDifferentiation (`prepare_user_sparsity`) then wraps the solver's
# `AutoFiniteDiff()` in `AutoSparse(...; KnownJacobianSparsityDetector(sparsity),
# GreedyColoringAlgorithm())`: coloured finite differences, Float64 calls of f only,
# and a sparse W = M - γJ for LinearSolve (KLU/UMFPACK). It also sets the diagonal
# of the pattern, in place: hence a fresh Float64 matrix per call.
function jac_prototype(alg::AbstractString, rows, cols, n::Int)
    alg in IMPLICIT_SOLVERS || return nothing
    r = as_ints(rows)
    c = as_ints(cols)
    isempty(r) && return nothing
    length(r) == length(c) ||
        throw(DimensionMismatch("jac_rows has $(length(r)) entries, jac_cols $(length(c))"))
    return SparseArrays.sparse(r, c, ones(Float64, length(r)), n, n)
end

# The ODEFunction with in-place f and the vjp / vjp_p hooks that
# SciMLSensitivity (>= 7.97) calls as vjp(out, v, u, p, t) and vjp_p(out, v, u, p, t).
# FullSpecialize: SciMLSensitivity unwraps the problem's function with
# `SciMLBase.unwrapped_f` (adjoint_common.jl). Its AutoSpecialize branch typed the hook
# fields `Nothing` while copying the hooks in SciMLBase 2.142-2.150 ("cannot convert
# a value to nothing"; fixed in 2.151, PR #1271); the FullSpecialize branch always kept
# them. The floor is 2.151 as well, and FullSpecialize costs nothing here: f! is the
# same closure type on every call, so the solver compiles once, and AutoSpecialize's
# function wrappers would only add an indirection in front of a Python call.
# `proto`: a sparse `jac_prototype` (see `jac_prototype`) or `nothing`.
function odefunction(f!, vjp!, vjp_p!, proto)
    proto === nothing && return SciMLBase.ODEFunction{true, SciMLBase.FullSpecialize}(
        f!; vjp = vjp!, vjp_p = vjp_p!)
    return SciMLBase.ODEFunction{true, SciMLBase.FullSpecialize}(
        f!; vjp = vjp!, vjp_p = vjp_p!, jac_prototype = proto)
end

# The ODEFunction over three Python callables.
function make_odefunction(f::Py, vjp_u::Py, vjp_p::Py, st::CallState, proto = nothing)
    f! = function (du, u, p, t)
        st.nf += 1
        py_into!(du, st, f, "f", to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    vjp! = function (out, v, u, p, t)
        st.nvjp += 1
        st.tmin_vjp = min(st.tmin_vjp, Float64(t))
        py_into!(out, st, vjp_u, "vjp_u", to_numpy(v), to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    vjp_p! = function (out, v, u, p, t)
        py_into!(out, st, vjp_p, "vjp_p", to_numpy(v), to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    return odefunction(f!, vjp!, vjp_p!, proto)
end

# ---- Native kernels: C function pointers called with ccall ------------------------
# pysciml compiles f, vjp_u and vjp_p with Numba and exports them with a fixed C ABI
# (pysciml/_native/_cabi.py), all buffers contiguous Float64:
#   int32 f(double *out, double *u, double *p, double t)                 out: n
#   int32 vjp_u(double *out, double *v, double *u, double *p, double t)  out: n
#   int32 vjp_p(double *out, double *v, double *u, double *p, double t)  out: m
# returning 0, or 1 when what they wrote is not finite. Python sends the addresses as
# ints (PythonCall: `int` -> `Int`); the Python objects that own the machine code stay
# alive on the Python side for the whole bridge call. No Python runs in a kernel call;
# `poll!` calls Python every POLL_NS so that Ctrl-C still stops a solve (see NOTES.md).

function as_ptr(x::Integer)
    ptr = Ptr{Cvoid}(UInt(x))
    ptr == C_NULL && throw(ArgumentError("a native kernel's address is 0"))
    return ptr
end
as_ptr(x::Py) = as_ptr(pyconvert(UInt, x))

# Between two Python polls during a native solve: the main thread needs the GIL, which
# the host thread holds during a bridge call, to see a Ctrl-C at all.
const POLL_NS = UInt64(10_000_000)

# Calls the Python `poll` (which raises after a Ctrl-C) at most every POLL_NS; its
# exception is recorded like any Python callback's (code 4).
function poll!(st::CallState, poll::Py)
    now = time_ns()
    now - st.lastpoll < POLL_NS && return nothing
    st.lastpoll = now
    try
        poll()
    catch e
        st.pyerror === nothing && (st.pyerror = "poll: " * sprint(showerror, e))
        rethrow()
    end
    return nothing
end

# What a ccall can take for a `double *` of `length(buf)` values: `x` itself when it is
# a plain Float64 `Array` (contiguous), else `buf`, into which `x` is copied when
# `copyin` (inputs). SciMLSensitivity hands the hooks views (`@view u[1:n]` in the
# Interpolating and Backsolve adjoints) and Backsolve calls f with a view `du`; any
# other AbstractArray is copied the same way. A length other than the kernel's would
# make it read or write out of bounds: refused before the call.
function native_arg(st::CallState, name::String, x::AbstractArray, buf::Vector{Float64},
        copyin::Bool)
    if length(x) != length(buf)
        msg = "$name has $(length(x)) values; the native kernel takes $(length(buf))"
        st.shapeerror === nothing && (st.shapeerror = msg)
        throw(DimensionMismatch(msg))
    end
    x isa Array{Float64} && return x
    copyin && copyto!(buf, x)
    return buf
end

struct NativeFailure <: Exception
    msg::String
end
Base.showerror(io::IO, e::NativeFailure) = print(io, e.msg)

# A kernel's return code: 1 (non-finite output) ends the solve as a Python
# NonFiniteError does on the callback path, and is reported as code 3.
function native_check(st::CallState, name::String, rc::Cint, t::Float64)
    rc == 0 && return nothing
    if rc == 1
        msg = "the native $name wrote a non-finite value at t = $t"
        st.nonfinite === nothing && (st.nonfinite = msg)
    else
        msg = "the native $name returned $rc (0 or 1 expected)"
    end
    throw(NativeFailure(msg))
end

# The ODEFunction over three native kernels, for a state of `n` and parameters of `m`
# values; the same hooks and bookkeeping as `make_odefunction`. Buffers are allocated
# once per bridge call.
function make_native_odefunction(fptr::Ptr{Cvoid}, vjp_u_ptr::Ptr{Cvoid},
        vjp_p_ptr::Ptr{Cvoid}, poll::Py, st::CallState, n::Int, m::Int, proto = nothing)
    ubuf, vbuf, outn = zeros(n), zeros(n), zeros(n)
    pbuf, outm = zeros(m), zeros(m)
    f! = function (du, u, p, t)
        st.nf += 1
        poll!(st, poll)
        o = native_arg(st, "f: du", du, outn, false)
        uu = native_arg(st, "f: u", u, ubuf, true)
        pp = native_arg(st, "f: p", p, pbuf, true)
        tf = Float64(t)
        rc = ccall(fptr, Cint, (Ptr{Float64}, Ptr{Float64}, Ptr{Float64}, Float64),
            o, uu, pp, tf)
        native_check(st, "f", rc, tf)
        o === du || copyto!(du, o)
        return nothing
    end
    vjp! = function (out, v, u, p, t)
        st.nvjp += 1
        tf = Float64(t)
        st.tmin_vjp = min(st.tmin_vjp, tf)
        poll!(st, poll)
        o = native_arg(st, "vjp_u: out", out, outn, false)
        vv = native_arg(st, "vjp_u: v", v, vbuf, true)
        uu = native_arg(st, "vjp_u: u", u, ubuf, true)
        pp = native_arg(st, "vjp_u: p", p, pbuf, true)
        rc = ccall(vjp_u_ptr, Cint,
            (Ptr{Float64}, Ptr{Float64}, Ptr{Float64}, Ptr{Float64}, Float64),
            o, vv, uu, pp, tf)
        native_check(st, "vjp_u", rc, tf)
        o === out || copyto!(out, o)
        return nothing
    end
    vjp_p! = function (out, v, u, p, t)
        tf = Float64(t)
        poll!(st, poll)
        o = native_arg(st, "vjp_p: out", out, outm, false)
        vv = native_arg(st, "vjp_p: v", v, vbuf, true)
        uu = native_arg(st, "vjp_p: u", u, ubuf, true)
        pp = native_arg(st, "vjp_p: p", p, pbuf, true)
        rc = ccall(vjp_p_ptr, Cint,
            (Ptr{Float64}, Ptr{Float64}, Ptr{Float64}, Ptr{Float64}, Float64),
            o, vv, uu, pp, tf)
        native_check(st, "vjp_p", rc, tf)
        o === out || copyto!(out, o)
        return nothing
    end
    return odefunction(f!, vjp!, vjp_p!, proto)
end

# ---- failures --------------------------------------------------------------------

function failure_code!(st::CallState, e)
    if st.pyerror !== nothing
        LAST_ERROR[] = st.pyerror
        return 4
    end
    if st.nonfinite !== nothing
        LAST_ERROR[] = st.nonfinite
        return 3
    end
    LAST_ERROR[] = st.shapeerror !== nothing ? st.shapeerror : sprint(showerror, e)
    return 5
end
