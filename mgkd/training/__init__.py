"""The training machinery every network shares: the Trainer's loop and checkpoints, the learner
it trains, the tasks that score it, how steps run (eagerly or as CUDA graphs) and per-epoch
callbacks."""
