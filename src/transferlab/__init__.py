"""transferlab: compare ways of reusing a pretrained Keras network on a new task with few labels."""
import os

# TensorFlow's C++ start-up INFO/WARNING lines (cpu_feature_guard, absl's "before InitializeLog")
# print at its first import, whichever module imports it; every project import runs this first.
# Errors still print; TF_CPP_MIN_LOG_LEVEL=0 in the environment shows everything again.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
