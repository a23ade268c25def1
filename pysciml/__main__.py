"""Command line: `python -m pysciml {demo,julia,backends,crossval}`."""

import argparse
import sys

# The names of `_crossval.CASES`, listed here so that `--help` imports no JAX.
CASE_NAMES = ("decay", "linear", "stiff-linear", "lotka-volterra", "rober", "vdpol",
              "orego", "e5")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysciml")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="Lotka-Volterra calibration, then the cross-validation report, on every "
        "installed backend; saves two work-precision diagrams in out/crossval/",
    )
    demo.add_argument("--steps", type=int, default=300)
    demo.add_argument("--backends", default=None, help="comma-separated; default: all")
    demo.add_argument(
        "--quick",
        action="store_true",
        help="a short cross-validation report: the exponential-decay case only",
    )
    julia = sub.add_parser("julia", help="the Julia backend")
    julia.add_argument(
        "--warmup",
        action="store_true",
        help="start Julia, install and precompile its packages, and solve once",
    )
    julia.add_argument(
        "--selftest",
        action="store_true",
        help="verify the Julia bridge: values and gradients against references, "
        "stiff and sparse solves, threads, exit and Ctrl-C; prints a pass/fail table",
    )
    julia.add_argument("--backend", default="julia", help=argparse.SUPPRESS)
    sub.add_parser("backends", help="list the backends and whether each is available")
    cv = sub.add_parser(
        "crossval", help="values, gradients and timings of every backend, side by side"
    )
    cv.add_argument("--rtol", type=float, default=1e-8)
    cv.add_argument("--backends", default=None, help="comma-separated; default: all")
    cv.add_argument(
        "--cases",
        default=None,
        help="comma-separated, from: " + ", ".join(CASE_NAMES) + "; default: all",
    )
    cv.add_argument(
        "--plot",
        metavar="DIR",
        default=None,
        help="also sweep rtol over 1e-4, 1e-6, 1e-8, 1e-10 and save a work-precision "
        "diagram (error against time; values, and gradients where there is a "
        "reference) per case as DIR/<case>.png; needs matplotlib",
    )
    args = parser.parse_args(argv)
    if getattr(args, "backends", None):
        from ._backend import backend_names

        unknown = [n for n in args.backends.split(",") if n not in backend_names()]
        if unknown:
            parser.error(
                f"--backends: unknown backend(s) {', '.join(map(repr, unknown))}; "
                f"known: {','.join(backend_names())}"
            )

    if args.command == "demo":
        from ._demo import run_crossval, run_demo

        backends = None if args.backends is None else args.backends.split(",")
        cases = ("decay",) if args.quick else None
        return run_demo(steps=args.steps, backends=backends) or run_crossval(
            backends, cases=cases, plot_dir=None if args.quick else "out/crossval"
        )
    if args.command == "backends":
        from ._demo import available_backends

        for name, (ok, why) in available_backends(start=False).items():
            print(f"{name:8s} {'available' if ok else 'unavailable'}: {why}")
        return 0
    if args.command == "crossval":
        from ._demo import _has_matplotlib, run_crossval

        if args.plot is not None and not _has_matplotlib():
            parser.error(
                "crossval --plot needs matplotlib: pip install 'pysciml[examples]' "
                "(or pip install matplotlib)."
            )
        backends = None if args.backends is None else args.backends.split(",")
        cases = CASE_NAMES if args.cases is None else tuple(args.cases.split(","))
        unknown = [c for c in cases if c not in CASE_NAMES]
        if unknown:
            parser.error(
                f"crossval --cases: unknown {', '.join(unknown)}; choose from "
                f"{', '.join(CASE_NAMES)}."
            )
        return run_crossval(backends, rtol=args.rtol, cases=cases, plot_dir=args.plot,
                            plot_cases=None)
    if args.command == "julia":
        if args.selftest:
            from ._selftest import run_selftest

            return run_selftest(args.backend)
        from ._demo import julia_warmup

        if args.warmup:
            return julia_warmup()
        julia.print_help()
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
