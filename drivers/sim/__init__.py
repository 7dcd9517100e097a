"""Register-level emulators of the supported chips.

The real driver code runs unchanged against them: I2C chips sit on an emulated bus
with smbus2's ``SMBus`` methods, Modbus devices answer on one end of a pseudo-terminal.
"""
