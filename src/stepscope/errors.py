"""The error users see for bad input (no heavy imports: the workflow's parse step uses it)."""


class StepScopeError(ValueError):
    """Bad input: the message names the problem and the fix."""
