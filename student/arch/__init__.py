"""The one registry of student architectures, selected by name (``StudentConfig.arch``).

A new architecture is one module in this package: a :class:`~student.arch.base.StudentNet`
subclass decorated with :func:`register`, whose docstring says the design it follows, its
input/output convention, and its parameters and MACs at 480×640 (``tests/test_student_arch.py``
checks those numbers against :func:`~student.arch.base.profile`). Every module of the package
is imported the first time an architecture is looked up, so nothing else needs editing.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from depthdata.errors import DepthdataError
from student.arch.base import (CONTEST_SIZE, Prediction, Profile, StudentConfig, StudentNet, check_options,
                               count_macs, count_params, profile)

__all__ = ["ARCHITECTURES", "CONTEST_SIZE", "Prediction", "Profile", "StudentConfig", "StudentNet", "build",
           "architectures", "count_macs", "count_params", "get", "profile", "register"]

#: name → class; filled by :func:`register` as the modules load (use :func:`architectures`)
ARCHITECTURES: dict[str, type[StudentNet]] = {}
_NOT_ARCHITECTURES = {"base"}


def register(name: str) -> Callable[[type[StudentNet]], type[StudentNet]]:
    """Class decorator: make a :class:`StudentNet` subclass buildable as ``name``."""

    def deco(cls: type[StudentNet]) -> type[StudentNet]:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not cls:
            raise ValueError(f"student architecture {name!r} is registered twice")
        cls.name = name
        ARCHITECTURES[name] = cls
        return cls

    return deco


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_ARCHITECTURES:
            importlib.import_module(f"{__name__}.{info.name}")


def architectures() -> dict[str, type[StudentNet]]:
    """Every registered architecture, by name."""
    _load_all()
    return dict(ARCHITECTURES)


def get(name: str) -> type[StudentNet]:
    """The class of architecture ``name``; a clear error listing the known ones otherwise."""
    known = architectures()
    if name not in known:
        raise DepthdataError(f"unknown student architecture {name!r}; choose one of {', '.join(sorted(known))}")
    return known[name]


def build(config: StudentConfig | None = None) -> StudentNet:
    """A new (randomly initialised) student of ``config``."""
    config = config or StudentConfig()
    cls = get(config.arch)
    check_options(cls, config)
    return cls(config)
