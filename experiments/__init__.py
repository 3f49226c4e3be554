"""Experiment entry points (`python -m experiments.<name>`): absl + ml_collections."""
