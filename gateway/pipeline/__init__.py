"""From a sensor's values to encoded telemetry in the uplink's queue: pooled records, the
stages (vibration features among them), batching, ``seq`` numbering and the codec. May import
``gateway.uplink`` (its queue) and ``gateway.config``.
"""
