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

# The adjoint pass uses the forward solver itself: the adjoint ODE is as stiff as the
# forward one (an explicit adjoint of a stiff solve stops at maxiters). The implicit
# solvers come from `make_solver`, with `autodiff = AutoFiniteDiff()`, so their
# Jacobians of the adjoint system are Float64 finite differences: SciMLSensitivity's
# adjoint right-hand sides only see dual numbers when `t isa ForwardDiff.Dual`
# (interpolating_adjoint.jl, gauss_adjoint.jl, quadrature_adjoint.jl,
# backsolve_adjoint.jl), which finite differences never produce. A sparsity pattern on
# the forward ODEFunction reaches the adjoint by itself: GaussAdjoint and
# QuadratureAdjoint build the adjoint `jac_prototype` as `copy(jac_prototype')`. (See
# julia/NOTES.md, "Stiff adjoints".)

# Every method is built with `autojacvec = ZygoteVJP()`. The user hooks come first
# whatever autojacvec is (derivative_wrappers.jl: `vecjacobian!` tests `has_vjp(f)`,
# `_vecjacobian_vjp!` prefers `vjp_p`; gauss/quadrature `vec_pjac!` test `has_vjp_p`
# first), but what SciMLSensitivity *allocates* depends on it: any Bool allocates a
# dense n x n `J` and an n x np `pJ` that the hooks never use (adjoint_common.jl,
# `autojacvec isa Bool`), 800 MB per gradient for a 10^4-state PDE. ZygoteVJP
# allocates neither and does no setup work through f (unlike ReverseDiffVJP, which
# records a tape by calling f, and `nothing`, which probes f with AD). Zygote itself is
# reached only without a `vjp_p` hook, and the bridge always gives one: so no Julia AD
# ever runs through Python (SciMLSensitivity#334: silent zero gradients).
function make_sensealg(name::AbstractString, reltol::Float64, abstol::Float64)
    vjp = SciMLSensitivity.ZygoteVJP()
    name == "GaussAdjoint" && return SciMLSensitivity.GaussAdjoint(autojacvec = vjp)
    name == "InterpolatingAdjoint" &&
        return SciMLSensitivity.InterpolatingAdjoint(autojacvec = vjp)
    name == "QuadratureAdjoint" &&
        return SciMLSensitivity.QuadratureAdjoint(autojacvec = vjp,
            abstol = abstol, reltol = reltol)
    name == "BacksolveAdjoint" && return SciMLSensitivity.BacksolveAdjoint(autojacvec = vjp)
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
