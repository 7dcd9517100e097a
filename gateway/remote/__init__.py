"""Remote configuration on the device: the layers and the stored layers per scope
(``layers``), their store (``store``), the effective config and the one rule for the stored
layers that run, start-up and SIGHUP alike (``effective``), the config a device starts on
(``startup``), the pure decision on each envelope (``decide``) and what is
reported of it (``report``). The reconfigurer that acts on them is the daemon's
(``gateway.daemon.reconfigure``). May import ``gateway.trust``, ``gateway.config`` and
``gateway.statefile``; ``decide`` no I/O at all.
"""
