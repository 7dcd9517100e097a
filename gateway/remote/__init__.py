"""Remote configuration on the device: the applied layers per scope and their store, the
acceptance rules of SPEC section 5, and the task that turns verified envelopes into a new
effective config. May import ``gateway.trust``, ``gateway.config`` and ``gateway.statefile``.
"""
