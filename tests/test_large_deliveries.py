"""A delivery of many items is mapped, planned and written with the event loop given back as it
goes: the listener answers senders (and its watchdog hears the heartbeat) meanwhile. Found by
probing: one signed delivery of 100,000 items (itemsToParse) held every answer, /healthz too,
for 17 seconds; at 600,000 the watchdog took it for a jq program that never ends, killed
`serve` twice and dead-lettered a valid delivery.

The tests count the loop's turns, not seconds: a turn is a chance for the door to answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ocean_hook.mapping.engine import CHUNK, Mapping
from ocean_hook.mapping.models import MappingFlags, parse_port_app_config
from ocean_hook.pipeline import MappedBatch, _plan_between_answers, map_raw, map_raw_between_answers
from ocean_hook.processors.base import RawResults
from ocean_hook.targets.local import WRITE_STEP, LocalCatalog

T = TypeVar("T")
ITEMS = 20 * CHUNK

MAPPING = """
resources:
  - kind: thing
    selector: {query: "true"}
    port:
      itemsToParse: .things
      entity:
        mappings:
          identifier: .item.id
          title: .item.id
          blueprint: '"thing"'
          properties: {repo: .repo, n: .item.n}
"""


def one_delivery_of_many_items() -> RawResults:
    """One raw item (the payload) that itemsToParse makes ITEMS."""
    return RawResults(updated=[{"repo": "r", "things": [{"id": str(i), "n": i} for i in range(ITEMS)]}])


async def turns_during(work: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """What `work` gives, and how many times another task ran while it went on."""
    turns = 0
    done = False

    async def other_task() -> None:
        nonlocal turns
        while not done:
            await asyncio.sleep(0)
            turns += 1

    ticker = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    start = turns
    try:
        result = await work()
        ran = turns - start
    finally:
        done = True
        await ticker
    return result, ran


async def test_mapping_gives_the_loop_back_after_each_chunk_of_items_even_from_one_raw_item() -> None:
    """The chunks were counted in raw items: one payload whose itemsToParse held 100,000 was
    one chunk, mapped in one go."""
    mapper = Mapping(parse_port_app_config(MAPPING, "mapping.yml")).mappers[0]
    batch, turns = await turns_during(lambda: map_raw_between_answers(mapper, one_delivery_of_many_items()))
    assert len(batch.upserts) == ITEMS and batch.result.errors == []
    assert turns >= ITEMS // CHUNK - 1
    alone = map_raw(mapper, one_delivery_of_many_items())  # test-mapping's way: the same result
    assert [m.entity for m in alone.upserts] == [m.entity for m in batch.upserts]


async def test_the_plan_of_many_items_leaves_the_loop_free() -> None:
    mapper = Mapping(parse_port_app_config(MAPPING, "mapping.yml")).mappers[0]
    batch: MappedBatch = map_raw(mapper, one_delivery_of_many_items())
    changes, turns = await turns_during(lambda: _plan_between_answers(batch, {}, MappingFlags()))
    assert [c.action for c in changes] == ["create"] * ITEMS
    assert turns > 0


async def test_the_local_catalog_writes_many_entities_a_step_at_a_time(tmp_path: Path) -> None:
    catalog = LocalCatalog(tmp_path / "catalog.db")
    entities: list[dict[str, Any]] = [{"identifier": str(i), "blueprint": "thing", "title": str(i)}
                                      for i in range(ITEMS)]
    try:
        outcomes, turns = await turns_during(lambda: catalog.upsert(entities, MappingFlags()))
        assert all(o.ok for o in outcomes) and len(outcomes) == ITEMS
        assert WRITE_STEP <= 500 and turns >= ITEMS // 500 - 1
        keys = [("thing", str(i)) for i in range(ITEMS)]
        found, turns = await turns_during(lambda: catalog.get_entities(keys))
        assert len(found) == ITEMS and found[("thing", "7")]["title"] == "7"
        assert turns > 0
        _, turns = await turns_during(lambda: catalog.delete(keys, MappingFlags()))
        assert turns >= ITEMS // 500 - 1
        assert await catalog.get_entities(keys) == {}
    finally:
        await catalog.close()
