-- MQTT broker state that survives a hub restart: retained messages and persistent
-- sessions. Values are the broker's own encoding, opaque to the registry; the broker writes
-- them behind (every housekeeping interval and at shutdown) and reads them once at start.

CREATE TABLE mqtt_retained (
    topic  TEXT  NOT NULL PRIMARY KEY,
    value  BYTEA NOT NULL
);

CREATE TABLE mqtt_sessions (
    client_id   TEXT     NOT NULL PRIMARY KEY,
    value       BYTEA    NOT NULL,
    -- Unix microseconds after which the session is gone; NULL: no end known (never expires,
    -- or the client was connected when it was saved).
    expires_at  BIGINT
);
