"""One Modbus link: a serial port (RTU) or one TCP connection, through pymodbus.

* :class:`ModbusLine` is one link: a serial port (RTU) or one TCP connection (a device, or
  a gateway in front of an RS-485 line). It serialises requests with a lock, sets each
  request's own timeout, and translates pymodbus errors into :class:`TransportError` /
  :class:`TransportTimeoutError` (``raise … from err``) – nothing from pymodbus leaks out;
  an exception response is a :class:`ModbusDeviceError`.
* After a timeout the line is *dirty*: the late answer of a slow slave may still arrive and
  would be read as the answer to the next request (neuron #1602, grid-x/modbus #78). So the
  input is flushed right after the timeout and again before the next request
  (``reset_input_buffer`` on serial, a non-blocking drain on TCP). pymodbus also drops
  frames whose slave id or transaction id does not match the request.

The sync pymodbus client is used: requests are made from plain threads. Callers import
these names from :mod:`edge_agent.modbus`.
"""

from __future__ import annotations

import select
import threading
from typing import Any

import serial
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from device_profiles.modbus_map import Function, ReadBlock
from edge_agent.transport import TransportError, TransportTimeoutError


class ModbusDeviceError(TransportError):
    """The slave answered with a Modbus exception response (illegal address, busy, ...)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


def _parse_tcp(tcp: tuple[str, int] | str) -> tuple[str, int]:
    if isinstance(tcp, tuple):
        return tcp
    host, _, port = tcp.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TCP target {tcp!r} is not host:port")
    return host, int(port)


def _close(client: Any) -> None:
    """Close a pymodbus client: its ``close()`` is unannotated (pymodbus 3.x), which a
    typed caller may not call directly; taken as ``Any`` here, in one place."""
    client.close()


class ModbusLine:
    """One RTU port or TCP connection; thread-safe, one request at a time."""

    def __init__(
        self,
        *,
        rtu: str | None = None,
        tcp: tuple[str, int] | str | None = None,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
    ) -> None:
        if (rtu is None) == (tcp is None):
            raise ValueError("give exactly one of rtu= (a serial port) or tcp= (host, port)")
        self.name = rtu if rtu is not None else "{}:{}".format(*_parse_tcp(tcp))  # type: ignore[arg-type]
        self._client: ModbusSerialClient | ModbusTcpClient
        if rtu is not None:
            self._client = ModbusSerialClient(
                rtu, baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                retries=0, timeout=1.0, name=f"modbus-rtu {rtu}",
            )
        else:
            host, port = _parse_tcp(tcp)  # type: ignore[arg-type]
            self._client = ModbusTcpClient(host, port=port, retries=0, timeout=1.0,
                                           name=f"modbus-tcp {self.name}")
        self._lock = threading.Lock()
        self._dirty = False

    def open(self) -> None:
        with self._lock:
            self._connect()

    def close(self) -> None:
        with self._lock:
            _close(self._client)

    def _connect(self) -> None:
        try:
            ok = self._client.connect()
        except (ModbusException, OSError, serial.SerialException) as err:
            raise TransportError(f"cannot open Modbus line {self.name}: {err}") from err
        if not ok:
            raise TransportError(f"cannot open Modbus line {self.name}")

    def _flush(self) -> None:
        """Drop input bytes that arrived after a timeout (a late answer)."""
        sock = self._client.socket
        if sock is None:
            return
        try:
            if isinstance(sock, serial.SerialBase):
                sock.reset_input_buffer()
            else:
                while select.select([sock], [], [], 0)[0]:
                    if not sock.recv(4096):
                        break
        except (OSError, serial.SerialException):
            _close(self._client)  # reconnect on the next request
        self._dirty = False

    def _execute(self, what: str, slave: int, timeout_s: float, call: Any) -> Any:
        with self._lock:
            self._connect()
            if self._dirty:
                self._flush()
            self._client.comm_params.timeout_connect = timeout_s
            try:
                response = call(self._client)
            except ModbusIOException as err:
                self._flush()
                self._dirty = True  # flush again before the next request
                if "No response" in str(err):
                    raise TransportTimeoutError(
                        f"{self.name} slave {slave}: no answer to {what} within {timeout_s} s"
                    ) from err
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
            except ConnectionException as err:
                _close(self._client)
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
            except (ModbusException, OSError, serial.SerialException) as err:
                _close(self._client)
                raise TransportError(f"{self.name} slave {slave}: {what}: {err}") from err
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusDeviceError(
                f"{self.name} slave {slave}: {what}: exception code {code}", code=code
            )
        return response

    def read(self, slave: int, block: ReadBlock, *, timeout_s: float) -> list[int]:
        """Read one block of registers from ``slave``."""
        what = f"read {block.function} 0x{block.address:04X}+{block.count}"
        registers: list[int] = []
        # A late answer to an earlier, timed-out request can arrive while this one is in
        # flight and be taken for its answer (transaction ids drift after a timeout,
        # grid-x/modbus #78). An answer of the wrong device or size is such a stray: drop
        # it, flush the line and ask once more.
        for _attempt in range(2):
            if block.function is Function.INPUT:
                response = self._execute(what, slave, timeout_s, lambda c: c.read_input_registers(
                    block.address, count=block.count, device_id=slave))
            else:
                response = self._execute(
                    what, slave, timeout_s, lambda c: c.read_holding_registers(
                        block.address, count=block.count, device_id=slave))
            registers = list(response.registers)
            dev = getattr(response, "dev_id", slave)
            if len(registers) == block.count and dev in (slave, 0):
                return registers
            with self._lock:
                self._dirty = True
        raise TransportError(
            f"{self.name} slave {slave}: {what}: got {len(registers)} registers twice"
        )

    def write(self, slave: int, address: int, words: list[int], *, timeout_s: float) -> None:
        """Write holding registers (FC 16, or FC 6 for a single register)."""
        what = f"write 0x{address:04X}={words}"
        if len(words) == 1:
            self._execute(what, slave, timeout_s,
                          lambda c: c.write_register(address, words[0], device_id=slave))
        else:
            self._execute(what, slave, timeout_s,
                          lambda c: c.write_registers(address, words, device_id=slave))
