"""The kubernetes provider (see vip_sidecar.providers.kubernetes.provider): options, the API
client and its call table, the lease holder (the fence), labels and events, preflight."""

from vip_sidecar.providers.kubernetes.api import API_CALLS, NAMESPACED_CALLS, NODE_CALLS
from vip_sidecar.providers.kubernetes.holder import LeaseLost
from vip_sidecar.providers.kubernetes.options import parse_options
from vip_sidecar.providers.kubernetes.provider import KubernetesProvider, create

__all__ = [
    "API_CALLS",
    "NAMESPACED_CALLS",
    "NODE_CALLS",
    "KubernetesProvider",
    "LeaseLost",
    "create",
    "parse_options",
]
