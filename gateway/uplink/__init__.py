"""Everything between an encoded message and the broker: the two-tier queue (``queue``,
``spill``), the supervised connection (``supervisor``, with ``connect``, ``protocol``,
``tls``, ``publisher``, ``liveness``, ``routes``, ``reports``, ``link`` beside it and
``mqtt_client`` under it), pacing and the status payloads. Sends bytes and knows no
readings; imports only ``gateway.config``.
"""
