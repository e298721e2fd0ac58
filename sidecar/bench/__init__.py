"""`sidecar bench`: the performance targets of the brief (§9), measured on this machine.

Every figure is reported beside a reference measured in the same run on the same
machine (an Ed25519 signing loop, this disk's fsync latency, a bare SHA-256 loop
over the same segment files, Keycloak's own CPU for the same login), because the
targets are ratios: an absolute number from another host or another hour says
little on a shared 2-core VM.

* `bench ledger`: durable signed appends through `Ledger.append` (the proxy's write
  path) with many concurrent appenders, append latency with one appender,
  verification with every core, bytes per event at rest, and the cost of a
  signature per record against one per batch checkpoint.
* `bench proxy`: latency the sidecar adds to real Keycloak requests (pass-through
  and captured), and the sidecar's CPU per captured browser login against
  Keycloak's CPU for it.
* `bench replication`: replication lag to a directory store and to a loopback S3
  (moto, Object Lock bucket) at a steady append rate, and pull + verify throughput.
* `bench all`: the three with modest sizes.

Benchmarks are never tests: nothing here asserts a timing. docs/benchmarks.md has
the commands, what each number means, and the results measured here.

Dev only: no runtime module imports it; `sidecar bench` loads it lazily (tests/test_layers.py).
"""
