"""Launcher and operations beside the experiment: verify, the MLflow server, the README and pipeline generators, the layer check."""
