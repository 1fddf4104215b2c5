"""paho-mqtt's client as the publisher needs it, through paho's public API only.

Checked against paho-mqtt 2.2.0. Two things paho does not give by itself:

* **Why a (re)connection failed.** paho catches the ``OSError`` of a failed connect in
  its network loop and calls ``on_connect_fail`` without it, but a TLS verification
  failure must be reported as such (domain.md §5). :class:`ReportingClient` overrides
  the public ``Client.reconnect`` (which the loop calls) and hands the exception to
  ``connect_error`` on its way through.
* **Closing the socket of a failed TLS handshake.** paho wraps the TCP socket with the
  client's SSL context and calls ``do_handshake()``; when that raises it drops the
  socket without closing it: one leaked descriptor per retry until the garbage
  collector runs (a ``ResourceWarning``; the TLS tests fail on it). :func:`tls_context`
  builds the context itself and hands it to paho (``Client.tls_set_context``), so the
  sockets are the context's own: its ``sslsocket_class`` (a documented ``ssl`` hook)
  closes itself when its handshake fails and marks the context, which tells a handshake
  failure from a refused TCP connection (a plaintext server answers a ClientHello by
  resetting the connection: an ``OSError`` that is not an ``ssl.SSLError``, but a TLS
  failure all the same).

The context is what ``Client.tls_set`` would build with ``cert_reqs=CERT_REQUIRED`` and
``PROTOCOL_TLS_CLIENT``: the broker's certificate verified and its host name checked
(by the context: ``check_hostname`` on), never ``tls_insecure``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails (module docstring)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            if isinstance(self.context, TlsContext):
                self.context.handshake_failed = True
            self.close()
            raise


class TlsContext(ssl.SSLContext):
    """A client context whose sockets are closed when wrapping or the handshake fails."""

    sslsocket_class = _ClosingSSLSocket
    handshake_failed = False  # set by a failed handshake; see take_handshake_failure

    def wrap_socket(
        self, sock: socket.socket, server_side: bool = False,
        do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None, session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        try:
            return super().wrap_socket(
                sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=server_hostname,
                session=session)
        except BaseException:
            sock.close()
            raise

    def take_handshake_failure(self) -> bool:
        """Whether a handshake failed since the last call (one connection attempt)."""
        failed, self.handshake_failed = self.handshake_failed, False
        return failed


def tls_context(*, ca: Path | None, cert: Path | None, key: Path | None) -> TlsContext:
    """The broker verified (CA file, or the system's CAs) and its host name checked."""
    ctx = TlsContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        ctx.load_verify_locations(str(ca))
    else:
        ctx.load_default_certs()
    ctx.check_hostname = True
    return ctx


class ReportingClient(mqtt.Client):
    """paho's client, reporting *why* a (re)connection failed (module docstring)."""

    connect_error: Callable[[OSError], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as err:
            if self.connect_error is not None:
                self.connect_error(err)
            raise
