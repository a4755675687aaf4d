"""fdd_core: the engine-free library behind Feedback-Driven Distillation.

Config, schemas, data loaders, prompts, inference backends, the program sandbox, grading,
synthesis parsing, filtering, training, evaluation, dataset versions and reports. It never
imports Prefect (tests/test_layering.py enforces that); tasks/ and flows/ wrap it.
"""

__version__ = "0.1.0"
