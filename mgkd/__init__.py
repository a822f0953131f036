"""MGKD core: multi-granularity knowledge distillation as a library (no Ray, no Optuna here)."""
