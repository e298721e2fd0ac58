"""The harness's port check: a listener makes a port taken; connections a stopped server left in
TIME_WAIT do not (Keycloak restarts on its old ports while they linger)."""

from __future__ import annotations

import socket

from sidecar.harness.keycloak import _port_in_use


def test_a_port_is_in_use_while_listened_on_and_free_with_only_time_wait_left() -> None:
    """A listening port is in use; after the server closed an accepted connection first (TIME_WAIT on its port) and stopped listening, it is free."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Keycloak's Vert.x listener does
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    try:
        assert _port_in_use("127.0.0.1", port)
        accepted.close()  # the server side closes first: its end of the connection enters TIME_WAIT
        client.recv(1)
        client.close()
        server.close()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:  # what the old check did
            try:
                plain.bind(("127.0.0.1", port))
                lingering = False
            except OSError:
                lingering = True
        assert lingering, "expected the closed connection to hold the port in TIME_WAIT"
        assert not _port_in_use("127.0.0.1", port)
    finally:
        for s in (accepted, client, server):
            s.close()
