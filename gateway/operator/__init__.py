"""The operator's side: commands run on an operator's machine, not on a device (``keygen``,
``sign``, ``push-config``, ``release``, ``rollout``, ``fleet status``). May import
``gateway.trust``, ``gateway.config``, ``gateway.remote.layers``, ``gateway.firmware.rollout``
and the uplink's gmqtt seam; the daemon never imports it, and the command line imports it only
inside the commands that need it.

Layered (a contract in ``pyproject.toml``): the views (rich) above the commands above the
session, signing and fragment modules. A command never imports its view: it states what it
draws on as a ``Protocol``, and the command line passes the view in.
"""
