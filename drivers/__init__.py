"""Sensor drivers and their register-level emulators.

Drivers are synchronous and know nothing of asyncio, MQTT or configuration files:
the gateway runs them off the event loop.
"""
