"""Search spaces for Optuna (arrives with the sweep issue)."""
