"""How Keycloak 26.7.3 reads a request path, so capture routes exactly what Keycloak routes. [pure]

Capture must recognise a request by the resource Keycloak will run for it, not by
its spelling: if `token/` reaches the token endpoint, it is a token request. So
the router does not compare strings against known spellings; it applies the
same two steps Keycloak's HTTP stack applies, then matches resource templates on
the result.

1. **Vert.x `RoutingContext.normalizedPath()`** (RFC 3986 §6.2.2 and §5.2.4):
   percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
   dot segments are removed, and runs of `/` become one. Keycloak's
   `RejectNonNormalizedPathFilter` answers 400 `missingNormalization` to any
   path that this step changes, and 400 `invalidCharacter` to a path holding
   `;`, unless `--http-accept-non-normalized-paths=true`; with that option the
   normalised path is what gets routed.
2. **RESTEasy Reactive's matcher** (JAX-RS): matrix parameters (`;x=y`) are not
   part of a segment, one trailing `/` is ignored, literal segments compare
   case-sensitively in their still-encoded form (`protocol%2Fopenid-connect`
   is one segment that matches nothing), and template values (`{realm}`,
   `{id}`) are percent-decoded.

The result is a superset of what Keycloak answers in its default configuration:
every spelling Keycloak routes to a resource is routed here to the same
resource, and the spellings Keycloak refuses with 400 are routed too (Keycloak
refuses them without acting, so their records say "failed"), which also keeps
the answer right with `--http-accept-non-normalized-paths`. Measured on the real
server (tests/e2e/test_surface.py): `token`, `token/`, `token?`, `token/?q` and
the absolute form `http://host/realms/...` reach the token endpoint; `token//`,
`//realms/...`, `./`, `x/../`, `%74oken`, `ledger%2Dtest` get 400
`missingNormalization`; any `;` gets 400 `invalidCharacter`; `Token`, `Realms`,
`protocol%2Fopenid-connect`, `token%20`, `token.`, `token#x` match no resource
(404/405); methods are case-sensitive (`post` gets 405). With
`--http-accept-non-normalized-paths=true` (probed on 26.7.3, 2 Dec 2026): `token;`,
`token;/`, `token/;x`, `realms;/r/...` and `r;x=1` reach the token endpoint, while a
segment that is only matrix parameters is an empty segment, not a collapsed one:
`/realms/;/r/...` names realm "" (404), `/;/realms/...`, `/r/;/protocol/...` and
`token/;/` match nothing (404/405); `..;` and `.;` stay literal `..` and `.` segments
(`/r/x/..;/protocol/...` is 404, never realm r's token endpoint).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["KeycloakPath", "keycloak_path"]

_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_SLASHES = re.compile(r"/{2,}")


@dataclass(frozen=True, slots=True)
class KeycloakPath:
    """A request path as Keycloak's router sees it.

    `segments` are the path segments in their encoded form (what literal
    template parts are compared with); `value(i)` is segment `i` decoded (what a
    `{param}` receives). `normalised` says whether Keycloak's default
    configuration accepts the spelling as sent (False: it answers 400).
    """

    segments: tuple[str, ...]
    normalised: bool

    def value(self, i: int) -> str:
        return unquote(self.segments[i], errors="surrogateescape")

    def values(self, start: int = 0) -> tuple[str, ...]:
        return tuple(self.value(i) for i in range(start, len(self.segments)))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _request_path(target: str) -> str:
    """The path of a request target (origin form or absolute form), without its query."""
    if not target.startswith("/"):
        parts = urlsplit(target)
        if parts.scheme and parts.netloc:
            target = target[len(parts.scheme) + 3 + len(parts.netloc) :] or "/"
    return target.partition("?")[0] or "/"


@functools.lru_cache(maxsize=4096)  # a pure function of the target; clients repeat the same few (bounded)
def keycloak_path(target: str) -> KeycloakPath:
    """Normalise a raw request target the way Keycloak's HTTP stack does before matching a resource."""
    raw = _request_path(target)
    path = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    path = _SLASHES.sub("/", _remove_dot_segments(path if path.startswith("/") else "/" + path))
    normalised = path == raw and ";" not in raw
    # Matrix parameters are cut after the slashes were collapsed, so a segment that is only matrix
    # parameters (";x") stays as an empty segment: Keycloak does not route `/realms/;/r/...` to realm r.
    segments = [seg.partition(";")[0] for seg in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is ignored by the matcher
    return KeycloakPath(tuple(segments), normalised)
