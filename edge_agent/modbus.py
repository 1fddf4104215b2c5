"""Modbus RTU/TCP frame sources: a register map polled through pymodbus (imperative shell).

* :class:`ModbusLine` is one link: a serial port (RTU) or one TCP connection (a device, or
  a gateway in front of an RS-485 line). It serialises requests with a lock, sets each
  request's own timeout, and translates pymodbus errors into :class:`TransportError` /
  :class:`TransportTimeoutError` (``raise … from err``) – nothing from pymodbus leaks out.
* After a timeout the line is *dirty*: the late answer of a slow slave may still arrive and
  would be read as the answer to the next request (neuron #1602, grid-x/modbus #78). So the
  input is flushed right after the timeout and again before the next request
  (``reset_input_buffer`` on serial, a non-blocking drain on TCP). pymodbus also drops
  frames whose slave id or transaction id does not match the request.
* :class:`ModbusFrameSource` executes the map's read plan (``build_read_plan``) once per
  poll and decodes it (``decode_registers``); ``extras`` keeps raw AD, calibration
  registers, counters and identity of the last poll; ``send`` writes tare/zero commands.
* :class:`ModbusBus` shares one line among several slaves, polled round-robin. Each slave
  has its own timeout and, after a failure, a jittered exponential backoff, so a silent
  slave costs the others at most its timeout once per backoff period. Per-slave state is
  inspectable (:meth:`ModbusBus.states`). The bus's clock is injectable (``clock=``,
  ``time.monotonic`` by default), so a test can check the schedule without racing it.

The sync pymodbus clients are used: ``poll(timeout_s)`` is called from a plain thread.

The code is in three modules: :mod:`edge_agent.modbus_line` (the link),
:mod:`edge_agent.modbus_source` (one slave) and :mod:`edge_agent.modbus_bus` (the shared
line's schedule); this module is where callers import it from.
"""

from __future__ import annotations

from edge_agent.modbus_bus import ModbusBus
from edge_agent.modbus_line import ModbusDeviceError, ModbusLine
from edge_agent.modbus_source import ModbusFrameSource, SlaveHealth, SlaveState

__all__ = [
    "ModbusBus",
    "ModbusDeviceError",
    "ModbusFrameSource",
    "ModbusLine",
    "SlaveHealth",
    "SlaveState",
]
