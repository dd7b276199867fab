"""The pipeline's own errors: faults in input a user can act on from the message alone.

Every such error class derives from :class:`PipelineError` (besides its natural built-in base), so
a stage or a ``wsol`` command reports it in one line, where anything else is a bug and keeps its
traceback.
"""


class PipelineError(Exception):
    """A fault in configuration, data, downloads, weights or training runs; the message names it."""


def first_few(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` names, comma-separated, then how many more there are: what an error lists."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
