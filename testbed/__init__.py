"""Test bed shared by tests/ and bench/: network namespaces, daemons, peers."""
