-- The web console: when each device was last seen, and the indexes its device list and
-- audit search read through.

-- When the device last completed an MQTT CONNECT (Unix microseconds), written at most once
-- per device per few minutes by each hub node (Hub::note_connected) and only ever moved
-- forward. Deleted with the device.
CREATE TABLE device_presence (
    device_id     TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    last_seen_at  BIGINT  NOT NULL
);

-- The device list filtered by state, in id order, without reading the other states' rows.
CREATE INDEX devices_state ON devices (state, id);

-- A device's latest certificate expiry (the list shows it per row) from the index alone.
-- It replaces certificates_device_id: every lookup by device still uses the leading column,
-- and a certificate insert maintains as many indexes as before.
CREATE INDEX certificates_device_not_after ON certificates (device_id, not_after);
DROP INDEX certificates_device_id;

-- Audit search by target (a device's history) or by actor (what one operator did), newest
-- first, without scanning the whole log.
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
