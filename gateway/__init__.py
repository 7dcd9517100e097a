"""edge-gateway: the daemon that reads sensors and publishes them over one MQTT uplink."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
