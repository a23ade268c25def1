"""Neural ODEs on any backend: `import pysciml.nn as nn`."""

from ._nn import MLPVectorField as MLPVectorField
from ._nn import NeuralODE as NeuralODE
