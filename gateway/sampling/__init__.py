"""The sensors' side: one sampler task and worker thread per sensor, its health, opening the
configured driver on a real or emulated bus, and the ``read`` command. May import ``drivers``,
``gateway.pipeline`` and the rooms below it.
"""
