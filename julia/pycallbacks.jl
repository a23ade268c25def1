# Conversions at the Python boundary and the in-place wrappers around the
# Python callables.  Included by PySciML.jl.

const NUMPY = pyimport("numpy")

# Message of the most recent failure (for debugging from Python).
const LAST_ERROR = Ref("")
last_error() = LAST_ERROR[]

# Bookkeeping for one `forward` / `vjp` call, shared by its wrappers.
mutable struct CallState
    nf::Int                            # calls made to the Python f
    nvjp::Int                          # calls made to the Python vjp_u
    tmin_vjp::Float64                  # smallest t at which vjp_u was called
    pyerror::Union{Nothing,String}     # first exception raised by a Python callback
    shapeerror::Union{Nothing,String}  # first result of the wrong shape or type
end
CallState() = CallState(0, 0, Inf, nothing, nothing)

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
    LAST_ERROR[] = st.shapeerror !== nothing ? st.shapeerror : sprint(showerror, e)
    return 5
end
