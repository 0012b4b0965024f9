"""A fake Kubernetes apiserver (TEST DOUBLE) for the Kubernetes provider's tests."""

from tests.k8sfake.server import FakeApiServer, Request, self_signed_cert
from tests.k8sfake.store import ApiError, Store, merge_patch

__all__ = ["ApiError", "FakeApiServer", "Request", "Store", "merge_patch", "self_signed_cert"]
