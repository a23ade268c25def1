"""Shared command-line plumbing for the examples: `--backend`, `--plot DIR`, `--seed`.

Every example is a script with `main(argv=None) -> dict`: it parses its arguments,
prints its results, saves plots under `--plot DIR` if given, and returns the numbers it
printed (which `tests/test_examples.py` checks).
"""

import argparse
import os
from pathlib import Path

import jax


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--backend",
        default=os.environ.get("PYSCIML_BACKEND") or "diffrax",
        choices=["diffrax", "scipy", "julia"],
        help="solver backend (default: $PYSCIML_BACKEND, else diffrax)",
    )
    p.add_argument("--plot", metavar="DIR", default=None, help="save plots into DIR")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup() -> None:
    """Scientific examples compute in float64 (pysciml itself never sets this)."""
    jax.config.update("jax_enable_x64", True)


def figure_path(plot_dir: str | None, name: str) -> Path | None:
    """Where to save figure `name`, creating `plot_dir`; `None` if plots are off."""
    if plot_dir is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    path = Path(plot_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path / name
