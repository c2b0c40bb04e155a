"""What harstream writes for its brokers: users and access rules (``access``) and the
nats-server configuration (``nats``). Pure text generators: no broker runs here."""
