"""The journal between the listener and the workers: `sqlite` (embedded) or `redis` (shared).

Both implement `ocean_hook.queue.base.Queue`; `ocean_hook.runtime.open_queue` picks one from the
config. The backends are imported from their modules so that SQLite users never import redis.
"""
