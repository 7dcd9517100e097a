"""The gray-release firmware channel on the device: which releases this device takes
(``rollout``, ``manifest``), the download (``download``), the bundle and the A/B slots
(``bundle``, ``install``, ``slots``), disk space (``space``), the health gate (``health``),
and the one persisted state machine that ties them together: the firmware task
(``updater``) with its decisions (``decisions``), one attempt at a release (``job``), the
trial (``trial``), the record and its writer (``state``, ``recorder``), what it is told
(``settings``) and how an attempt fails (``failure``); and the stable launcher
(``launcher``) that the unit starts before any release. May import ``gateway.trust``,
``gateway.config`` and the standard-library-only ``gateway.wire`` (topics and state words),
``gateway.statefile`` and ``gateway.logthrottle``; ``launcher``, ``slots`` and ``state``
import nothing else but the standard library, since they run before any release. The wire
format is docs/PROTOCOL.md sections 3.6 and 6.
"""
