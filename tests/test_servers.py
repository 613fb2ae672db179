"""The helpers that start the tests' real servers (no server is started here)."""

from __future__ import annotations

import base64

from tests.servers import new_cluster_id


def test_a_kafka_cluster_id_never_starts_with_a_dash():
    # A first byte of 0xF8 encodes to '-': StorageTool took `-t -XYZ...` for a missing ID.
    draws = iter([b"\xf8" + bytes(15), b"\x00" * 16])
    cluster_id = new_cluster_id(lambda n: next(draws))
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")
    assert cluster_id == base64.urlsafe_b64encode(b"\x00" * 16).decode().rstrip("=")
