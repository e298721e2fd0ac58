"""core: the ledger format and its checks, pure. [pure]

Events, canonical JSON, records, frames, segment headers, keys, signed notes and checkpoints, Merkle
trees, proofs, the trust anchor, the reference verifier, witness cosignatures, field encryption and the
proxy's exchange values. Bytes and values in, values (or findings) out: no sockets, files, clocks,
logging or asyncio; time, keys and randomness are passed in.

Dependency rule: imports only the standard library, orjson, cryptography, multidict and
`sidecar.errors`; nothing else of the package (tests/test_layers.py checks it). See docs/design.md.
"""
