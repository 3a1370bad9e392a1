"""Shared bottom layer: the error family and unit parsing. Imports nothing from sysplan."""

from sysplan.core.errors import InputError, NoPlanFits, SysplanError

__all__ = ["InputError", "NoPlanFits", "SysplanError"]
