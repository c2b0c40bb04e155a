"""The gateway and its I/O: the transport seam, the MQTT transport (paho-mqtt), an
in-memory broker for unit tests, and the gateway pipeline that joins them to the engine."""
