"""Pure array-in, array-out functions: face, flow, strain, residual, dynamic, magnify, apex. No I/O."""
