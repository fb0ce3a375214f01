"""pydp: a DPDK fast-path dataplane with a Python control surface.

The C core (``csrc/``) does all per-packet work on worker lcores; this
package composes pipelines, opens ports, pushes tables, drives test traffic
and reads counters. Start with :class:`Pipeline` and :class:`Dataplane`.
"""

from .errors import (
    AlreadyExists,
    Busy,
    ConfigError,
    InvalidArgument,
    NotFound,
    NotSupported,
    OutOfMemory,
    PermissionDenied,
    PydpError,
)
from .pipeline import Pipeline
from .ports import Port
from .runtime import Dataplane
from .source import Source, Vary
from .stats import Stats

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists", "Busy", "ConfigError", "Dataplane", "InvalidArgument", "NotFound",
    "NotSupported", "OutOfMemory", "PermissionDenied", "Pipeline", "Port", "PydpError",
    "Source", "Stats", "Vary",
]
