"""The WSOL pipeline: data, models and methods, training, export, evaluation and the report (README, "Layout")."""
