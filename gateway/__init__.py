"""edge-gateway: the daemon that reads sensors and publishes them over one MQTT uplink.

The version is written here, and the package metadata takes it from here
(``pyproject.toml``): asking ``importlib.metadata`` at run time would cost the daemon
4 MiB of imports (zipfile, email, csv) for one string. The package also keeps structlog
from loading rich (``importguard``), before any of its modules imports structlog.
"""

__version__ = "0.1.0"

from gateway import importguard

importguard.install()
