"""The at-rest secret search: a one-time code is found where it would be written, not inside longer numbers."""

from __future__ import annotations

import pytest

from tests.fixtures_sidecar import holds_secret


@pytest.mark.parametrize(
    ("blob", "secret", "found"),
    [
        (b'{"otp":"123456"}', "123456", True),
        (b"otp=123456&totp=x", "123456", True),
        (b"code 123456\n", "123456", True),
        (b'"ts":"1796220549123456011"', "123456", False),  # six digits inside a nanosecond timestamp
        (b"offset 91234567", "123456", False),
        (b"password=Sup3r-123456-x", "Sup3r-123456-x", True),  # other secrets: any occurrence
        (b"xxSup3r-123456-xyy", "Sup3r-123456-x", True),
        (b"nothing here", "Sup3r-123456-x", False),
    ],
)
def test_secret_search(blob: bytes, secret: str, found: bool) -> None:
    """Short all-digit secrets count as numbers of their own; every other secret counts anywhere."""
    assert holds_secret(blob, secret) is found
