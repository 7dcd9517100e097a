"""The YAML fragment ``push-config`` sends: top-level keys of the device file, checked here
with the device's own models before anything is signed.

A device validates the whole effective config and refuses an update that fails, but only
after the operator has signed, published and waited; the same models run here first, on
the fragment read by the device file's loader (so hostile YAML is bounded the same way),
with the fragment's own line numbers. Each key must be one a remote layer may set
(``layers.refused_keys``), and none may name a command to run or a local file to read
(``layers.local_only``: the installer, MQTT password and TLS files, trusted key paths), with
the device's own words (``KEY: cannot be set remotely``); its value is validated the way a
device file's is, with stand-ins for the keys a device file must have and a fragment need
not. Trusted key files are not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.config import file as configfile
from gateway.remote.layers import NEVER_REMOTE, local_only, refused_keys

# Valid values for the keys every device file has; a fragment's own values replace them.
_STAND_INS: dict[str, Any] = {
    "device_id": "push-config",
    "mqtt": {"brokers": ["mqtt://localhost:1883"]},
}


def read(path: Path, scope: str) -> dict[str, Any]:
    """The fragment's settings for ``scope`` (``device`` or ``group:G``); raises
    ``ConfigError`` with ``FILE:LINE: dotted.field: message`` issues."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise configfile.ConfigError(
            [configfile.ConfigIssue(file, None, "", f"cannot read: {reason}")]) from exc
    settings = configfile.read_settings(text, file)
    issues = list(settings.issues)
    refused = refused_keys(scope, settings.data)
    for key in refused:
        why = "cannot be set remotely" if key in NEVER_REMOTE else (
            "cannot be set by a group update (a device's own update can)")
        issues.append(configfile.ConfigIssue(file, settings.line((key,)), key, why))
    for key in local_only(settings.data):
        loc = tuple(int(part) if part.isdigit() else part for part in key.split("."))
        issues.append(configfile.ConfigIssue(file, settings.line(loc), key,
                                             "cannot be set remotely"))
    rest = {k: v for k, v in settings.data.items() if k not in refused}
    configfile.validate({**_STAND_INS, **rest}, file, index=settings.index, issues=issues,
                        key_files=False)
    try:
        json.dumps(settings.data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise configfile.ConfigError(
            [configfile.ConfigIssue(file, None, "", f"not sendable as JSON: {exc}")]) from None
    return settings.data
