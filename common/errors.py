"""The one exception type that means "the user's input is wrong".

Every part of the project raises :class:`UserError` (or a subclass, e.g. ``space.SpecError``) for
bad input: malformed JSON, impossible numbers, missing files. The CLI turns it into one line on
stderr and exit code 2, with no traceback. Anything else escaping is a bug.
"""


class UserError(Exception):
    """Bad input from the user; the message is one line saying what is wrong and what to do."""
