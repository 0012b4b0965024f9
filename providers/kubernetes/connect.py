"""Connecting to the apiserver: kubeconfig (and its context's namespace) or the
in-cluster service account (token, CA, namespace file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from providers.kubernetes.api import KubeApi
from providers.kubernetes.options import Options

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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
    # urllib3's default retries would turn one request timeout into four; the
    # provider decides itself when to try again
    cfg.retries = False
    api = KubeApi(client.ApiClient(cfg), namespace or "default", opts.request_timeout)
    return api, source
