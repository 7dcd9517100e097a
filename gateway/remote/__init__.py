"""Remote configuration on the device: the layers and the stored layers per scope
(``layers``), their store (``store``), the effective config and the one rule for the stored
layers that run, start-up and SIGHUP alike (``effective``), the config a device starts on
(``startup``), the pure decision on each envelope (``decide``, docs/PROTOCOL.md section
5.3) and what is reported of it (``report``, section 5.4). The reconfigurer that acts on
them is the daemon's (``gateway.daemon.reconfigure``). May import ``gateway.trust``,
``gateway.config`` and the utilities outside the layers (``statefile``, ``wire``,
``logthrottle``); ``decide`` no I/O at all.
"""
