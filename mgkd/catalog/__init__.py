"""What exists and its defaults, torch-free: models, KD methods and modes, data sets, tasks and
objectives. Each list and default table lives here once; the torch registries derive from it."""
