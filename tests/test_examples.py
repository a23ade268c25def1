"""Every example script runs, with its tiny settings, on every installed backend — the
same script, only `--backend` changes (as numpyro's test/test_examples.py does).

Each example declares `TINY_ARGS` (a list of command-line arguments that make it run in
seconds) and `main(argv) -> dict`. Checks of the numbers each example reports live in
the example's own test file (`tests/test_example_<name>.py`).
"""

import importlib.util
from pathlib import Path

import pytest
from helpers import BACKENDS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def load_example(name: str):
    """Imports `examples/<name>.py` as a module (examples are scripts, not a package)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(path.parent))  # for `from _common import ...`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


# Runs checked elsewhere in the default run, marked slow here to keep `make test`
# short: (example, backend) -> where.
COVERED = {
    # ~25 s; tests/test_train_data_parallel.py runs the script 5 times on Diffrax
    # (1 device, 2 devices with --plot, 2 processes, a resume).
    ("train_neural_ode", "diffrax"): "tests/test_train_data_parallel.py",
}


def _cases():
    for path in EXAMPLES:
        for backend in BACKENDS:
            marks = pytest.mark.slow if (path.stem, backend) in COVERED else ()
            yield pytest.param(path, backend, marks=marks,
                               id=f"{path.stem}-{backend}")


@pytest.mark.parametrize(("path", "backend"), list(_cases()))
def test_example_runs_on_every_backend(path, backend, tmp_path):
    module = load_example(path.stem)
    assert hasattr(module, "TINY_ARGS"), f"{path.name} must declare TINY_ARGS"
    result = module.main([*module.TINY_ARGS, "--backend", backend,
                          "--plot", str(tmp_path)])
    assert isinstance(result, dict) and result
    assert list(tmp_path.glob("*.png")), f"{path.name} saved no plot under --plot"
