"""ledger: the write-ahead log: one writer task that sequences, chains, signs and fsyncs records.

`writer` (group commit, recovery, sealing, key rotation), `keystore` (the signing keys and the trust
anchor), `index` (the SQLite lookup index, rebuildable from the segments), `subjects` (the
per-person keys identifying values are encrypted under, and their erasure). Observers (index,
replicator, drift, witnesses) subscribe to its commits; it calls none of them by name.

Dependency rule: imports `core`, `policy` and the shared base (`errors`, `clock`, `durable`); never
`capture`, `proxy`, `replicate` or `audit`. See docs/design.md.
"""
