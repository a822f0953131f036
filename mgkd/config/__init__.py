"""The experiment config and the sweep file, torch-free: their schemas (validated once, on
pydantic, into one-paragraph errors), defaults resolved in one place, and execution settings."""
from mgkd.config.experiment import (MAX_GRANULARITIES, ExperimentConfig, Granularity,
                                    apply_overrides, default_config, load_config,
                                    paper_granularities, parse_overrides, resolve, save_config)

__all__ = ["MAX_GRANULARITIES", "ExperimentConfig", "Granularity", "apply_overrides",
           "default_config", "load_config", "paper_granularities", "parse_overrides", "resolve",
           "save_config"]
