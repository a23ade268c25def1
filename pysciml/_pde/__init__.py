"""Method-of-lines building blocks (grids, finite-difference operators, boundary
conditions, Jacobian sparsity). Public names are re-exported by `pysciml.pde`."""
