"""The gray-release firmware channel on the device: which releases this device takes
(``rollout``), the signed manifest's acceptance, the download, the A/B slots, and the one
persisted state machine that ties them together. May import ``gateway.trust``,
``gateway.config`` and ``gateway.statefile``.
"""
