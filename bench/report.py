"""Re-print the tables and ratios of a run from its JSON files, as markdown.

    python -m bench.run_all --json-dir out/ && python -m bench.report out/

(docs/benchmarks.md's tables were produced this way.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/report.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, failover, footprint, ipv6, scale


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    d = Path(args[0])
    common.MARKDOWN[0] = True
    found = False
    data = load(d / "failover.json")
    if data:
        found = True
        m = data["machine"]
        print(
            f"commit {m.get('commit', '?')}; machine: {m['cpu']} x{m['cores']}, "
            f"kernel {m['kernel']}, python {m['python']}, ucarp {m['ucarp']}, {m['keepalived']}"
        )
        for scenario in failover.SCENARIOS:
            if f"summary_{scenario}" in data:
                failover.report(data[f"summary_{scenario}"], scenario)
    data = load(d / "ipv6.json")
    if data and "summary_kill9" in data:
        found = True
        ipv6.report(data["summary_kill9"])
    data = load(d / "footprint.json")
    if data:
        found = True
        footprint.report(data["results"], data["imported"], data["window_s"])
        if data.get("import_costs"):
            footprint.print_import_costs([tuple(c) for c in data["import_costs"]])
    data = load(d / "scale.json")
    if data:
        found = True
        scale.report(data["results"], data["window_s"])
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
