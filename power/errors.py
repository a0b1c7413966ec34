"""Exceptions raised by the ``power`` package.

Every backend (NVML, simulated, replay, RAPL, external meters) translates its own failures into
these types, so callers handle one hierarchy whatever measures or controls the hardware.
"""
from __future__ import annotations


class PowerError(Exception):
    """Base class of every error raised by :mod:`power`."""


class NoPermissionError(PowerError):
    """The operation needs privileges this process lacks (e.g. root to set a power limit)."""


class NotSupportedError(PowerError):
    """The device or driver does not support the operation (e.g. no energy counter)."""


class LibraryMissingError(PowerError):
    """A required library or driver is absent (no ``pynvml``, no ``libnvidia-ml.so``)."""


class OutOfRangeError(PowerError, ValueError):
    """A requested setting lies outside the range the device accepts."""
