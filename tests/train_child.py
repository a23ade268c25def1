"""A child process of `test_train_data_parallel.py`: runs `examples/train_neural_ode.py`
with the given arguments in a fresh JAX (so that `--devices` and `--coordinator` can
set up devices and processes) and prints one JSON line: the losses, the final
parameters and the device and process counts. Floats are printed by `repr`, which
round-trips: the parent compares them bit for bit.

    python train_child.py ARG...
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_examples import load_example  # noqa: E402


def main():
    out = load_example("train_neural_ode").main(sys.argv[1:])
    keep = ("losses", "params", "step", "devices", "processes", "full_mse",
            "initial_full_mse")
    print("JSON:" + json.dumps({k: (out[k].tolist() if hasattr(out[k], "tolist")
                                    else out[k]) for k in keep}))


if __name__ == "__main__":
    main()
