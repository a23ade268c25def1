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
        # The same logic as `backend="julia"`: juliacall decides, in a child process
        # (a failed or hanging start must not take the test session with it).
        from pysciml._julia import julia_probe

        ok, why = julia_probe()
        reason = f"needs Julia, and it did not start here: {why} (see README, " \
                 "'Enabling Julia')"
    except Exception as e:  # pragma: no cover - defensive: never break collection
        ok, reason = False, f"needs Julia: {e}"
    if not ok:
        skip = pytest.mark.skip(reason=reason)
        for item in julia_items:
            item.add_marker(skip)
