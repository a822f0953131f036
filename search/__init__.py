"""Sweeps: sweep files, planning, Tuner set-up, resume, and the `mgkd` command line."""
