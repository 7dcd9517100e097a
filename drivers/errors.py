"""One small hierarchy for everything a sensor read can fail with."""


class DriverError(Exception):
    """A sensor could not be read; the caller decides whether to retry later."""


class BusError(DriverError):
    """The bus transfer failed (I2C NACK, errno from the adapter, serial I/O error)."""


class CrcError(DriverError):
    """The device answered, but the checksum of its answer does not match."""


class SensorTimeout(DriverError):
    """The device did not answer within the time the data sheet allows."""


class ChipIdError(DriverError):
    """Something answered at the address, but it is not the chip we were told to expect."""


class ModbusExceptionError(DriverError):
    """The Modbus device answered with an exception response."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"modbus exception code {code}")
        self.code = code


class InvalidReading(DriverError):
    """The device answered well-formed, but with a value its data sheet says is not a
    measurement (a DS18B20's 85 °C power-on value)."""
