"""MGKD core: multi-granularity knowledge distillation as a library (no Ray, no Optuna here).

Its folders are its layers, each importing only from those above it in this list:

* ``catalog``   — what exists and its defaults: models, KD methods and modes, data sets, tasks,
  objectives (torch-free; every name list and default table lives here once);
* ``config``    — the experiment config and the sweep file: schemas, validation, ``resolve``,
  execution settings (torch-free);
* ``data``, ``models``, ``reid``, ``methods`` — data sets and batching, the model zoo, re-ID losses
  and metrics, the KD methods;
* ``training``  — the Trainer, its steps (eager or CUDA graphs), the learner base, the tasks'
  losses and scoring, callbacks;
* ``knowledge`` — the frozen teacher's knowledge: teachers, granularity heads and the head bank;
* ``distill``   — the distillation loss, learner and trainer;
* ``runner``, ``cli`` — standalone runs and the core subcommands.

``errors``, ``io`` and ``paths`` are helpers every layer may use (``tests/test_layers.py`` holds
the code to this order).
"""
