"""fedkit: robust and private federated learning over PyTorch.

Pure components on flat parameter tensors (docs/architecture.md). Everything a researcher composes
is re-exported here: keys and samplers, flat parameters, ``chain`` and the components.
"""

from fedkit._components import *  # noqa: F403
from fedkit._components import __all__ as _components_all
from fedkit.client import ClientConfig
from fedkit.core import *  # noqa: F403
from fedkit.core import __all__ as _core_all
from fedkit.simulation import History, simulate
from fedkit.strategy import ServerState, Stragglers, Strategy

__version__ = "0.1.0"
__all__ = [
    *_core_all,
    *_components_all,
    "ClientConfig",
    "History",
    "ServerState",
    "Strategy",
    "Stragglers",
    "simulate",
]
