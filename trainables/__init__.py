"""Ray Tune trainables wrapping mgkd runs: the per-trial distillation function and the Ray tasks
that prepare each teacher's knowledge once per sweep."""
