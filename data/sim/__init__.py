"""Simulation with lalsuite: detector noise, BBH signals and their SNR, the 2-s Kaggle-layout
generator, long strain with injections, and the likelihood-ratio bounds (docs/synthetic-data.md)."""
