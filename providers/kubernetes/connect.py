"""Connecting to the apiserver: kubeconfig (and its context's namespace) or the
in-cluster service account (token, CA, namespace file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import urllib3

from vip_sidecar.providers.kubernetes.api import KubeApi
from vip_sidecar.providers.kubernetes.options import Options

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class _NoTimeoutRetry(urllib3.util.Retry):
    """urllib3's Retry, minus timeouts: a request that timed out is the provider's to
    retry (its deadlines count), never the client's, which would double the wait."""

    def _is_connection_error(self, err: Exception) -> bool:
        # urllib3 files a refused connection (NewConnectionError) under
        # ConnectTimeoutError: keep that one (nothing was sent, it fails in
        # microseconds), drop a real connect timeout
        if isinstance(err, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
            err, urllib3.exceptions.NewConnectionError
        ):
            return False
        return bool(super()._is_connection_error(err))

    def _is_read_error(self, err: Exception) -> bool:
        if isinstance(err, urllib3.exceptions.ReadTimeoutError):
            return False
        return bool(super()._is_read_error(err))


def stale_connection_retry() -> urllib3.util.Retry:
    """One immediate client-level retry, for the case the client cannot tell from an
    outage: a keep-alive connection the apiserver (or a load balancer) closed while it
    sat in the pool. A failed connect is retried whatever the method (nothing was
    sent); a connection dropped after sending only for GET and PUT: our PUTs carry a
    resourceVersion, so a replay of one that did land is a 409 the holder resolves by
    reading again. POST (Lease/Event create) and PATCH are not replayed. No retry on
    timeouts or on any HTTP status: the provider decides those (429 Retry-After)."""
    return _NoTimeoutRetry(
        total=1,
        connect=1,
        read=1,
        status=0,
        other=0,
        redirect=0,
        backoff_factor=0,
        allowed_methods=frozenset({"GET", "PUT"}),
        raise_on_status=False,
        raise_on_redirect=False,
    )


def connect(opts: Options, environ: Mapping[str, str], sa_dir: Path) -> tuple[KubeApi, str]:
    """Build a client from kubeconfig or the in-cluster service account (blocking).
    Returns it and where its configuration came from."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.config import incluster_config

    # the client ships without annotations for its config loaders
    kconfig: Any = kube_config
    in_cluster_loader: Any = incluster_config.InClusterConfigLoader
    cfg = client.Configuration()
    namespace = opts.namespace
    if opts.kubeconfig or "KUBERNETES_SERVICE_HOST" not in environ:
        path = os.path.expanduser(opts.kubeconfig or "~/.kube/config")
        kconfig.load_kube_config(
            config_file=path,
            context=opts.context,
            client_configuration=cfg,
            persist_config=False,
        )
        if namespace is None:
            _, active = kconfig.list_kube_config_contexts(path)
            if opts.context:
                contexts, _ = kconfig.list_kube_config_contexts(path)
                active = next(c for c in contexts if c["name"] == opts.context)
            namespace = (active or {}).get("context", {}).get("namespace")
        source = f"kubeconfig {path}"
    else:
        in_cluster_loader(
            token_filename=str(sa_dir / "token"),
            cert_filename=str(sa_dir / "ca.crt"),
            environ=environ,
        ).load_and_set(cfg)
        ns_file = sa_dir / "namespace"
        if namespace is None and ns_file.exists():
            namespace = ns_file.read_text().strip() or None
        source = "in-cluster service account"
    cfg.retries = stale_connection_retry()
    api = KubeApi(client.ApiClient(cfg), namespace or "default", opts.request_timeout)
    return api, source
