"""The error of :mod:`lookalike.actions`."""


class ActionError(RuntimeError):
    """A plan cannot be made or a run cannot be undone as asked."""
