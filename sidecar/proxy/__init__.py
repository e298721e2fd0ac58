"""proxy: the streaming reverse proxy in front of Keycloak, and the seam capture hooks into.

Forwards every exchange unchanged, reads captured bodies within bounds, and obeys the `CaptureHooks`
protocol's verdicts (a `Pushback` becomes 503 + Retry-After). It knows nothing of Keycloak's meaning or
of the ledger.

Dependency rule: imports `core` (the exchange values) and the shared base (`errors`, `metrics`, ...);
never `capture`, `policy`, `ledger` or anything later in the data path. See docs/design.md.
"""
