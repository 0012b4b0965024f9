"""The real Kubernetes control plane for the k8s_real tests (built from Go modules)."""
