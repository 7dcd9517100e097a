"""Everything between an encoded message and the broker: the two-tier queue (``queue``,
``spill``), the supervised connection (``supervisor``, ``mqtt_client``), pacing and the status
payloads. Sends bytes and knows no readings; imports only ``gateway.config``.
"""
