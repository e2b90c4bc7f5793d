"""MQTT device sessions after the claim: topics, the Mosquitto broker, and (next) sessions.

A claimed teddy goes online with the tokens it got; a fleet does the same so a soak
also loads the broker side. The client is aiomqtt (the maintained successor of
asyncio-mqtt, on paho's core); the broker is a real Mosquitto.
"""
