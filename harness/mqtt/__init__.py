"""MQTT device sessions after the claim, on a real Mosquitto.

A claimed teddy goes online with the tokens it got; a fleet does the same so a soak
also loads the broker side. One module per concept: ``spec`` (a cohort's
``[session]`` habits), ``topics``, ``broker`` (the embedded Mosquitto),
``credentials`` (the harness as its auth backend), ``client`` (aiomqtt made to
hold thousands of sessions), ``session`` (one device online), ``observer`` (what
the broker really delivered, and the checks), ``fleet`` (the run's MQTT side),
``stats`` and ``metrics`` (the report section and its Prometheus families).
"""
