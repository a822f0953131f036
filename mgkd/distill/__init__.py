"""Distillation on top of the training machinery: the loss of DESIGN.md §4 composed from its
terms, the learner one distillation step trains, and the trainer a run (trial or `mgkd train`)
fits."""
