-- Durable MQTT sessions, message by message: each QoS 1/2 message queued for a persistent
-- session is one row, written before the publisher is acknowledged (durability "sync") and
-- deleted when the subscriber has acknowledged it. The session row (mqtt_sessions) keeps
-- the rest of the session (subscriptions, inbound QoS 2 packet ids) in the broker's own
-- encoding; a session's rows go with it.

CREATE TABLE mqtt_queue (
    client_id  TEXT     NOT NULL REFERENCES mqtt_sessions (client_id) ON DELETE CASCADE,
    -- Order of queueing within the session.
    seq        BIGINT   NOT NULL,
    -- Set when the message was sent (it is in flight under this packet id); NULL: queued.
    packet_id  BIGINT,
    -- QoS 2: the subscriber sent PUBREC, the hub owes it PUBREL (the message is delivered).
    released   BOOLEAN  NOT NULL DEFAULT FALSE,
    -- The delivery, in the broker's encoding.
    value      BYTEA   NOT NULL,
    PRIMARY KEY (client_id, seq)
);
CREATE INDEX mqtt_queue_packet ON mqtt_queue (client_id, packet_id);
