"""replicate: the ledger copied, as it is written, to storage nobody can rewrite.

`replicator` follows the writer's commits and ships durable bytes; `layout` names every object by its
content (pure); `store` is the `ObjectStore` seam and its contract; `s3`, `directory` and `memory` are
its drivers.

Dependency rule: imports `core`, `ledger` (the `Commit` value only) and the shared base; never
`capture`, `proxy` or `audit`. See docs/design.md.
"""
