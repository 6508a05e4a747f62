"""The race and everything that trains: the one engine, early stopping, sweeps, pretraining, typed results."""
