# Conversions at the Python boundary and the in-place wrappers around the
# Python callables.  Included by PySciML.jl.

const NUMPY = pyimport("numpy")

# Message of the most recent failure (for debugging from Python).
const LAST_ERROR = Ref("")
last_error() = LAST_ERROR[]

# Bookkeeping for one `forward` / `vjp` call, shared by its wrappers.
mutable struct CallState
    nf::Int                            # calls made to the Python f
    tmin_vjp::Float64                  # smallest t at which vjp_u was called
    pyerror::Union{Nothing,String}     # first failure inside a Python callback
end
CallState() = CallState(0, Inf, nothing)

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

# Call a Python function and copy its 1-d result into `out`.  Any failure here
# (a Python exception, or a result of the wrong shape or type) is recorded as a
# callback error, which `failure_code!` reports as code 4.
function py_into!(out::AbstractVector, st::CallState, fn::Py, name::String, args...)
    try
        r = fn(args...)
        a = PyArray(r)
        (ndims(a) == 1 && length(a) == length(out)) ||
            throw(DimensionMismatch("$name returned shape $(size(a)), expected ($(length(out)),)"))
        copyto!(out, a)
    catch e
        st.pyerror === nothing && (st.pyerror = "$name: " * sprint(showerror, e))
        rethrow()
    end
    return nothing
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
# FullSpecialize keeps DiffEqBase from wrapping f in a FunctionWrappersWrapper,
# which would make SciMLSensitivity rebuild the ODEFunction without the hooks.
# `proto`: a sparse `jac_prototype` (see `jac_prototype`) or `nothing`.
function make_odefunction(f::Py, vjp_u::Py, vjp_p::Py, st::CallState, proto = nothing)
    f! = function (du, u, p, t)
        st.nf += 1
        py_into!(du, st, f, "f", to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    vjp! = function (out, v, u, p, t)
        st.tmin_vjp = min(st.tmin_vjp, Float64(t))
        py_into!(out, st, vjp_u, "vjp_u", to_numpy(v), to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    vjp_p! = function (out, v, u, p, t)
        py_into!(out, st, vjp_p, "vjp_p", to_numpy(v), to_numpy(u), to_numpy(p), Float64(t))
        return nothing
    end
    proto === nothing && return SciMLBase.ODEFunction{true, SciMLBase.FullSpecialize}(
        f!; vjp = vjp!, vjp_p = vjp_p!)
    return SciMLBase.ODEFunction{true, SciMLBase.FullSpecialize}(
        f!; vjp = vjp!, vjp_p = vjp_p!, jac_prototype = proto)
end

# ---- failures --------------------------------------------------------------------

function failure_code!(st::CallState, e)
    if st.pyerror !== nothing
        LAST_ERROR[] = st.pyerror
        return 4
    end
    LAST_ERROR[] = sprint(showerror, e)
    return 5
end
