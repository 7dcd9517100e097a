"""XY-MD02 temperature and humidity transmitter (SHT20 inside) on Modbus RTU.

Both readings are signed input registers in tenths, read in one request.
"""

from __future__ import annotations

from drivers.modbus import READ_INPUT_REGISTERS, ModbusRTU, signed16

TEMPERATURE = 0x0001
HUMIDITY = 0x0002


class XYMD02(ModbusRTU):
    DEFAULT_UNIT = 1

    def read(self) -> dict[str, float]:
        raw_t, raw_rh = self.read_registers(TEMPERATURE, 2, READ_INPUT_REGISTERS)
        return {
            "temperature_c": signed16(raw_t) / 10.0,
            "humidity_rh": signed16(raw_rh) / 10.0,
        }
