"""transferlab: compare ways of reusing a pretrained Keras network on a new task with few labels."""
import os

# TensorFlow's C++ start-up INFO/WARNING lines (cpu_feature_guard, absl's "before InitializeLog")
# print at its first import, whichever module imports it; every project import runs this first.
# Errors still print; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Same params -> same bits on any x86-64 machine, not only on the one that committed the results:
# oneDNN chooses its kernels by the CPU it finds at run time (AVX2 here, AVX-512 on another host),
# which changes the last bits of a matmul and so, through early stopping, whole epochs. TensorFlow's
# own (Eigen) kernels are compiled into the wheel and do not. `make verify` in CI depends on it.
# TF_ENABLE_ONEDNN_OPTS=1 in the environment turns oneDNN back on (and changes the numbers).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Each TensorFlow op runs on one thread. A batched matmul as small as this project's does not use
# a second core anyway; the cores are used by training several stacks of copies side by side
# (`engine.lanes`), which does 1.4-1.7x the work per second of one stack on two cores
# (bench/stacked_copies.md). A single-threaded op also computes the same bits on a machine with
# any number of cores. Read when TensorFlow starts its runtime (its first op), not at import.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
