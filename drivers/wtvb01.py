"""WitMotion WTVB01-485 vibration sensor on Modbus RTU.

Every quantity is a signed holding register; the ones read here lie in one block
(0x34..0x46), so one 19-register request fetches them all instead of five requests.
"""

from __future__ import annotations

from drivers.modbus import READ_HOLDING_REGISTERS, ModbusRTU, signed16

ACCEL_X = 0x34
VELOCITY_X = 0x3A
TEMPERATURE = 0x40
DISPLACEMENT_X = 0x41
FREQUENCY_X = 0x44
FIRST = ACCEL_X
LAST = FREQUENCY_X + 2
ACCEL_FULL_SCALE_G = 16.0
AXES = ("x", "y", "z")


class WTVB01(ModbusRTU):
    DEFAULT_UNIT = 0x50

    def read(self) -> dict[str, float]:
        count = LAST - FIRST + 1
        block = [signed16(v) for v in self.read_registers(FIRST, count, READ_HOLDING_REGISTERS)]

        def axes(name: str, first: int, per_unit: float) -> dict[str, float]:
            raw = block[first - FIRST : first - FIRST + 3]
            return {
                name.format(axis): value / per_unit for axis, value in zip(AXES, raw, strict=True)
            }

        return {
            **axes("accel_{}_g", ACCEL_X, 32768.0 / ACCEL_FULL_SCALE_G),
            **axes("velocity_{}_mm_s", VELOCITY_X, 1.0),
            "temperature_c": block[TEMPERATURE - FIRST] / 100.0,
            **axes("displacement_{}_um", DISPLACEMENT_X, 1.0),
            **axes("frequency_{}_hz", FREQUENCY_X, 10.0),
        }
