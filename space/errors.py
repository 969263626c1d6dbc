"""The error a malformed or impossible ArchSpec raises: a :class:`common.errors.UserError`, so the CLI
prints it as one line with exit code 2."""

from common.errors import UserError


class SpecError(UserError):
    """An ArchSpec (JSON or in memory) that is malformed or describes an impossible network."""
