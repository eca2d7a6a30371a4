"""The real port-ocean entity processor on the benchmark's data; run by bench_mapping.py with
the Python of a virtual environment that has `port-ocean` installed (never this project's).

    python ocean_reference.py INPUT.json OUTPUT.jsonl REPEAT

INPUT holds {"resource": <one port-app-config resource>, "items": [...]}. Each item goes through
`JQEntityProcessorSync._get_mapped_entity`, the per-item call Ocean's worker processes make, with
the mapping as Ocean's own models parse it. Prints {"seconds", "version"}; writes one line per
entity that passed the selector: {"entity", "misconfigurations"}.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

from loguru import logger
from port_ocean.context.ocean import initialize_port_ocean_context
from port_ocean.core.handlers.entity_processor.jq_entity_processor_sync import JQEntityProcessorSync
from port_ocean.core.handlers.port_app_config.models import ResourceConfig


def main(given: str, produced: str, repeat: int) -> None:
    logger.remove()  # Ocean logs every failed field; not what is measured here
    # the one setting the processor reads: jq may not read the environment (Ocean's default)
    initialize_port_ocean_context(SimpleNamespace(config=SimpleNamespace(allow_environment_variables_jq_access=False)))
    with open(given) as handle:
        data = json.load(handle)
    resource = ResourceConfig.parse_obj(data["resource"])
    mappings: dict[str, Any] = resource.port.entity.mappings.dict(exclude_unset=True)
    selector = resource.selector.query
    best = float("inf")
    kept: list[Any] = []
    for _ in range(repeat):
        started = time.perf_counter()
        results = [JQEntityProcessorSync._get_mapped_entity(item, mappings, selector) for item in data["items"]]
        best = min(best, time.perf_counter() - started)
        kept = [r for r in results
                if r.did_entity_pass_selector and r.entity.get("identifier") and r.entity.get("blueprint")]
    with open(produced, "w") as out:
        for r in kept:
            out.write(json.dumps({"entity": r.entity, "misconfigurations": r.misconfigurations}) + "\n")
    print(json.dumps({"seconds": best, "version": version("port-ocean")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
