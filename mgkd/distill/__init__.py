"""Distillation on top of the training machinery: the loss (the README's "The loss") composed
from its terms, the learner one distillation step trains, and the trainer a run (trial or
`mgkd train`) fits."""
