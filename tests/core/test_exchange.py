"""The pure exchange values the capture layer reads: form and JSON parsing, Content-Encoding undoing."""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from sidecar.core.exchange import (
    PASS_THROUGH,
    CapturePlan,
    Pushback,
    RequestHead,
    RequestView,
    ResponseView,
    decode_content,
    media_type,
)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


def _head(content_type: str | None = None) -> RequestHead:
    headers: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        headers["Content-Type"] = content_type
    return RequestHead(
        method="POST",
        path="/realms/tést/login-actions/authenticate",
        raw_path="/realms/t%C3%A9st/login-actions/authenticate?session_code=x",
        query=MultiDictProxy(MultiDict(session_code="x")),
        headers=CIMultiDictProxy(headers),
        client_ip="192.0.2.7",
        scheme="https",
        host="auth.example.org",
        request_id="abc-1",
    )


def _request(body: bytes, content_type: str | None) -> RequestView:
    return RequestView(_head(content_type), body, False)


def _response(body: bytes, content_type: str | None) -> ResponseView:
    headers: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        headers["Content-Type"] = content_type
    return ResponseView(200, CIMultiDictProxy(headers), body, False)


@given(st.lists(st.tuples(text, text), max_size=8))
def test_form_roundtrips_any_urlencoded_fields(fields: list[tuple[str, str]]) -> None:
    """Any list of text fields, urlencoded, parses back to the same fields in the same order."""
    view = _request(urlencode(fields).encode(), "application/x-www-form-urlencoded")
    assert list(view.form().items()) == fields


def test_form_accepts_parameters_and_case_in_content_type() -> None:
    """Content-Type parameters and case do not hide a form body."""
    view = _request(b"username=alice&password=a%26b&otp=", "Application/X-WWW-Form-Urlencoded; charset=UTF-8")
    assert view.form() == MultiDict([("username", "alice"), ("password", "a&b"), ("otp", "")])


@pytest.mark.parametrize("content_type", [None, "application/json", "multipart/form-data; boundary=x", "text/plain"])
def test_form_is_empty_for_other_bodies(content_type: str | None) -> None:
    """A body that is not urlencoded yields an empty form, never an error."""
    assert _request(b"username=alice", content_type).form() == MultiDict()


def test_form_survives_invalid_utf8() -> None:
    """Bytes that are not UTF-8 are replaced, not raised on."""
    assert _request(b"u=\xff\xfe", "application/x-www-form-urlencoded").form()["u"] == "\ufffd\ufffd"


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=10,
    )
)
def test_json_parses_any_json_body(value: object) -> None:
    """Any JSON value in a JSON body comes back from both views' json()."""
    import json

    body = json.dumps(value).encode()
    assert _request(body, "application/json").json() == value
    assert _response(body, "application/json;charset=UTF-8").json() == value


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b'{"a":1}', "text/html"),
    ],
)
def test_json_is_none_when_not_json(body: bytes, content_type: str | None) -> None:
    """Invalid, empty or non-JSON bodies give None."""
    assert _request(body, content_type).json() is None
    assert _response(body, content_type).json() is None


def test_request_without_content_type_is_json_as_keycloak_reads_it() -> None:
    """Keycloak (RESTEasy + Jackson) reads a request body without Content-Type as JSON; so does capture."""
    assert _request(b'{"a":1}', None).json() == {"a": 1}
    assert not _request(b'{"a":1}', None).json_body().certain
    assert _response(b'{"a":1}', None).json() is None


def test_vendor_json_types_count_as_json() -> None:
    """A +json media type (e.g. application/jwk-set+json) is parsed."""
    assert _response(b'{"keys":[]}', "application/jwk-set+json").json() == {"keys": []}


def test_text_uses_the_declared_charset() -> None:
    """text() decodes with the Content-Type charset, falling back to UTF-8 for unknown names."""
    assert _response("é".encode("latin-1"), "text/html; charset=ISO-8859-1").text() == "é"
    assert _response("é".encode(), "text/html; charset=no-such-charset").text() == "é"
    assert _response(b"\xff", "text/plain").text() == "\ufffd"


def test_request_view_forwards_the_head() -> None:
    """The convenience properties are the head's values."""
    view = _request(b"", None)
    assert (view.method, view.path, view.client_ip, view.request_id) == (
        "POST",
        "/realms/tést/login-actions/authenticate",
        "192.0.2.7",
        "abc-1",
    )
    assert view.query["session_code"] == "x"
    assert view.headers is view.head.headers


def test_values_are_frozen() -> None:
    """Exchange values cannot be changed after the proxy built them."""
    view = _request(b"x", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.body = b"y"  # type: ignore[misc]


def test_plan_and_pushback_values() -> None:
    """PASS_THROUGH captures nothing; Pushback defaults to Retry-After 1 and refuses a negative one."""
    assert PASS_THROUGH == CapturePlan(request_body=False, response_body=False)
    assert Pushback("queue full").retry_after == 1
    with pytest.raises(ValueError, match="retry_after"):
        Pushback("x", retry_after=-1)


def test_media_type() -> None:
    """media_type strips parameters, spaces and case."""
    assert media_type(" Text/HTML ; charset=utf-8") == "text/html"
    assert media_type(None) == media_type("") == ""


# -- Content-Encoding ----------------------------------------------------------------

ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw-deflate": lambda b: zlib.compress(b, wbits=-zlib.MAX_WBITS),  # what some servers call "deflate"
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
@given(data=st.binary(max_size=5000), limit=st.integers(0, 6000))
def test_decoding_undoes_the_encoding_within_the_limit(name: str, data: bytes, limit: int) -> None:
    """Decoding gives back the original bytes, cut at the limit and flagged when cut."""
    coding = "deflate" if name == "raw-deflate" else name
    assert decode_content(ENCODERS[name](data), coding, limit) == (data[:limit], len(data) > limit)


@given(data=st.binary(min_size=1, max_size=5000), cut=st.integers(1, 100))
def test_a_cut_off_gzip_stream_gives_a_flagged_prefix(data: bytes, cut: int) -> None:
    """A compressed capture cut short decodes to a prefix of the content, flagged truncated."""
    compressed = gzip.compress(data)
    body, truncated = decode_content(compressed[: max(1, len(compressed) - cut)], "gzip", 10_000)
    assert truncated is True
    assert data.startswith(body)


@given(garbage=st.binary(max_size=200), coding=st.sampled_from(["gzip", "deflate", "br", "zstd", "gzip, br"]))
def test_any_bytes_decode_without_raising(garbage: bytes, coding: str) -> None:
    """Corrupt or unknown encodings never raise; they give an empty, truncated body or a flagged prefix."""
    body, truncated = decode_content(garbage, coding, 100)
    assert len(body) <= 100
    if "br" in coding or "zstd" in coding:
        assert (body, truncated) == ((b"", True) if garbage else (b"", False))


def test_an_empty_body_is_empty_whatever_its_encoding() -> None:
    """A HEAD or 204 answer may name an encoding with no bytes: that is a whole, empty body."""
    for coding in ("gzip", "deflate", "br", None):
        assert decode_content(b"", coding, 100) == (b"", False)


def test_unknown_encoding_is_empty_and_truncated() -> None:
    """Brotli and zstd are not decoded: the capture gets nothing rather than compressed bytes."""
    assert decode_content(b"\x1b\x03\x00", "br", 100) == (b"", True)
    assert decode_content(b"(\xb5/\xfd", "zstd", 100) == (b"", True)


def test_stacked_and_identity_encodings() -> None:
    """Several codings are undone last-applied first; identity and no coding pass bytes through."""
    data = b"payload " * 100
    assert decode_content(gzip.compress(zlib.compress(data)), "deflate, gzip", 10_000) == (data, False)
    assert decode_content(data, "identity", 10_000) == (data, False)
    assert decode_content(data, None, 10) == (data[:10], True)


def test_multi_member_gzip_is_read_whole() -> None:
    """A gzip body of several members decodes to all of them."""
    assert decode_content(gzip.compress(b"one ") + gzip.compress(b"two"), "gzip", 100) == (b"one two", False)


def test_gzip_bomb_is_bounded() -> None:
    """A tiny body that inflates to 100 MiB costs at most the limit."""
    bomb = gzip.compress(b"\0" * (100 * 1024 * 1024))
    assert len(bomb) < 200_000
    body, truncated = decode_content(bomb, "gzip", 1024)
    assert body == b"\0" * 1024 and truncated is True


def test_an_identity_coding_still_bounds_the_body() -> None:
    """A body named identity-coded is cut at the limit and flagged, as an uncoded one is."""
    assert decode_content(b"x" * 50, "identity", 10) == (b"x" * 10, True)


def test_garbage_after_a_whole_gzip_member_keeps_the_member_flagged() -> None:
    """Bytes after a good gzip member that are not another member end the body there, flagged as cut."""
    assert decode_content(gzip.compress(b"whole") + b"not gzip at all", "gzip", 100) == (b"whole", True)


def test_a_truncated_body_is_not_read_as_json() -> None:
    """A captured body cut at the limit gives no JSON value and says why."""
    view = RequestView(_head("application/json"), b'{"a": [1, 2', True)
    got = view.json_body()
    assert (got.value, got.certain, got.note) == (None, False, "truncated")
