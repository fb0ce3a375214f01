"""Service load balancing: services, backends, algorithms, the live API.

See :mod:`pydp.lb.model` (the data), :mod:`pydp.lb.service` (changes on a
running dataplane) and the ``lb`` stage (:class:`pydp.stages.LoadBalancer`).
"""

from .model import ALGORITHMS, Backend, Service, backend_name, parse_backend_name
from .service import Services
from .table import maglev_build

__all__ = ["ALGORITHMS", "Backend", "Service", "Services", "backend_name", "maglev_build",
           "parse_backend_name"]
