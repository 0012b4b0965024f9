"""The kubernetes provider (see providers.kubernetes.provider): options, the API
client and its call table, the lease holder (the fence), labels and events, preflight."""

from providers.kubernetes.api import API_CALLS, NAMESPACED_CALLS, NODE_CALLS
from providers.kubernetes.holder import LeaseLost
from providers.kubernetes.options import parse_options
from providers.kubernetes.provider import KubernetesProvider, create

__all__ = [
    "API_CALLS",
    "NAMESPACED_CALLS",
    "NODE_CALLS",
    "KubernetesProvider",
    "LeaseLost",
    "create",
    "parse_options",
]
