# Solver / adjoint-method name tables and return-code mapping.
# Included by PySciML.jl.

# Implicit solvers get finite-difference Jacobians: the default, ForwardDiff,
# would push Dual numbers into the Python f.  Nothing here ever asks for a
# ForwardDiff Jacobian of the user's function.
const FD = ADTypes.AutoFiniteDiff()

const IMPLICIT_SOLVERS = ("Kvaerno5", "Rodas5P", "FBDF")

function make_solver(name::AbstractString)
    name == "Tsit5" && return OrdinaryDiffEq.Tsit5()
    name == "DP5" && return OrdinaryDiffEqLowOrderRK.DP5()
    name == "DP8" && return OrdinaryDiffEqHighOrderRK.DP8()
    name == "Kvaerno5" && return OrdinaryDiffEqSDIRK.Kvaerno5(autodiff = FD)
    name == "Rodas5P" && return OrdinaryDiffEq.Rodas5P(autodiff = FD)
    name == "FBDF" && return OrdinaryDiffEq.FBDF(autodiff = FD)
    throw(ArgumentError("unknown solver \"$name\""))
end

# Solver for the backward (adjoint) pass.  Explicit solvers are reused as they
# are; for the implicit ones the adjoint is integrated with Tsit5, so that no
# Jacobian of the adjoint system (and no AD of any kind) is ever needed.
adjoint_solver(name::AbstractString) =
    name in IMPLICIT_SOLVERS ? OrdinaryDiffEq.Tsit5() : make_solver(name)

# Every method is built with autojacvec = false and autodiff = false.  In
# SciMLSensitivity >= 7.97 the user hooks are used whatever autojacvec is
# (derivative_wrappers.jl: `vecjacobian!` checks `has_vjp(S.f)` before looking
# at autojacvec; gauss_adjoint.jl / quadrature_adjoint.jl `vec_pjac!` check
# `has_vjp_p` first).  autojacvec = nothing would start an automatic AD probe
# through the Python function; false with autodiff = false means any path that
# the hooks do not cover falls back to Float64 finite differences, never to
# Julia AD through Python (SciMLSensitivity issue #334: zero gradients).
function make_sensealg(name::AbstractString, reltol::Float64, abstol::Float64)
    name == "GaussAdjoint" &&
        return SciMLSensitivity.GaussAdjoint(autojacvec = false, autodiff = false)
    name == "InterpolatingAdjoint" &&
        return SciMLSensitivity.InterpolatingAdjoint(autojacvec = false, autodiff = false)
    name == "QuadratureAdjoint" &&
        return SciMLSensitivity.QuadratureAdjoint(autojacvec = false, autodiff = false,
            abstol = abstol, reltol = reltol)
    name == "BacksolveAdjoint" &&
        return SciMLSensitivity.BacksolveAdjoint(autojacvec = false, autodiff = false)
    throw(ArgumentError("unknown sensealg \"$name\""))
end

# SciMLBase.ReturnCode -> bridge code.
function retcode_int(rc)
    RC = SciMLBase.ReturnCode
    rc == RC.Success && return 0
    rc == RC.MaxIters && return 1
    rc == RC.DtLessThanMin && return 2
    (rc == RC.Unstable || rc == RC.DtNaN) && return 3
    return 5
end

# Save times must be ordered along the integration direction and lie in the span.
function check_times(ts::Vector{Float64}, t0::Float64, t1::Float64)
    t0 == t1 && throw(ArgumentError("t0 == t1"))
    lo, hi = minmax(t0, t1)
    issorted(ts; rev = t1 < t0) || throw(ArgumentError("save times are not ordered from t0 to t1"))
    all(t -> lo <= t <= hi, ts) || throw(ArgumentError("save times must lie in [t0, t1]"))
    return nothing
end
