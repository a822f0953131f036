"""Ray Tune trainables wrapping mgkd runs (arrives with the sweep issue)."""
