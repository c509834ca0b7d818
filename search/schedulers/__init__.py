"""The schedulers a search can run (``scheduler.type``), one module each behind :class:`base.Strategy`;
importing a module registers it. A new scheduler is a new module and its name in the import line below."""
from search.schedulers import asha, fifo, pb2, pbt  # noqa: F401 (the registry: each module registers itself)
from search.schedulers.asha import BaselineASHA  # the class path of ASHA pickled by launches of older versions
from search.schedulers.base import REGISTRY, KeepBaselines, Strategy, strategy

__all__ = ["REGISTRY", "BaselineASHA", "KeepBaselines", "Strategy", "strategy"]
