"""How a stage process starts and ends: the stage wrapper (one line for bad input) and the warm start."""
