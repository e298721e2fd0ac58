"""audit: the auditor's side: verify, pull, read only what verified, prove; and serve's auditor endpoint.

`verifier` runs the reference verifier (`core.verify`) over files; `pull`, `remote` and `http_source`
fetch a replica; `reading` yields only verified records; `timeline`, `proofs`, `witnesses`; `endpoint`
and `access` are the server-side auditor endpoint of `sidecar serve`.

Dependency rule: imports `core`, `policy`, `ledger`, `replicate` (store drivers, to pull), `capture`
(token checks, for the endpoint only) and the shared base; never `proxy`. See docs/design.md.
"""
