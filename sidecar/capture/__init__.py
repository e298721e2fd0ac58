"""capture: which Keycloak exchanges matter, and the identity events they end in.

`pipeline` decides (pure, with `classify` and `sessions`); `hooks` is the thin async layer that fetches
outside facts (`tokens`: JWKS checks, `reader`: Keycloak admin reads) and hands events to the appender
it was given.

Dependency rule: imports `core`, `policy` and the shared base; never `ledger` (the appender is handed
in), `replicate`, `audit` or `proxy`. See docs/design.md.
"""
