import os

import jax
import pytest

# Tests compare against float64 references (analytic, scipy, finite differences), so
# they run with x64 on; float32 behaviour is tested explicitly. pysciml itself never
# changes this setting.
jax.config.update("jax_enable_x64", True)
# Equinox runtime errors raise as Python exceptions.
os.environ.setdefault("EQX_ON_ERROR", "raise")


def pytest_collection_modifyitems(config, items):
    julia_items = [item for item in items if "julia" in item.keywords]
    if not julia_items:
        return
    try:
        from pysciml._julia import julia_status

        ok, why = julia_status()
        reason = f"needs Julia, and {why} (see README, 'Enabling Julia')"
    except Exception as e:  # pragma: no cover - defensive: never break collection
        ok, reason = False, f"needs Julia: {e}"
    if not ok:
        skip = pytest.mark.skip(reason=reason)
        for item in julia_items:
            item.add_marker(skip)
