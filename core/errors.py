"""The two kinds of user-facing failure (house style 7).

``InputError`` means "fix the input" (exit 2): the message names the bad value and what is
accepted. ``NoPlanFits`` means "change the question" (exit 1): the message says what came
closest and by how much. Broken invariants are ``assert``s, not these.
"""


class SysplanError(Exception):
    """A failure the user can act on; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class InputError(SysplanError):
    """Bad input: unknown name, malformed file, a pinned knob that cannot work (exit 2)."""

    exit_code = 2


class NoPlanFits(SysplanError):
    """A valid question whose answer is "nothing fits" (exit 1)."""

    exit_code = 1
