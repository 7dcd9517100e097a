"""What makes the daemon a well-behaved service: heartbeat, sd_notify and watchdog, logging
(journald, console, JSON) and the SIGUSR1 diagnostics report. Observes the rooms below it
(sampling, pipeline, uplink, config) and is imported only by the daemon and the CLI.
"""
