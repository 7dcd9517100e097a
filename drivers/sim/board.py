"""An emulated bus with one of each supported I2C chip at its default address: what
``edge-gateway scan --bus sim`` probes."""

from drivers import adxl345, bme280, sht3x
from drivers.sim.adxl345 import ADXL345Sim
from drivers.sim.bme280 import BME280Sim
from drivers.sim.i2c import SimI2CBus
from drivers.sim.sht3x import SHT3xSim


def populated_bus() -> SimI2CBus:
    bus = SimI2CBus()
    bus.attach(sht3x.DEFAULT_ADDRESS, SHT3xSim())
    bus.attach(bme280.DEFAULT_ADDRESS, BME280Sim())
    bus.attach(adxl345.DEFAULT_ADDRESS, ADXL345Sim())
    return bus
