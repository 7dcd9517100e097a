"""The operator's side: commands run on an operator's machine, not on a device (``keygen``,
``sign``). May import ``gateway.trust`` and ``gateway.config``; the daemon never imports it,
and the command line imports it only inside the commands that need it.
"""
