-- Firmware updates (moat-ota): signing keys, the image catalogue, rollout campaigns with one
-- row per targeted device, and what each device last said it runs (its inventory).
-- Timestamps are Unix microseconds.

-- Public keys images must be signed with. `key_ref` is the vault reference of the private
-- key when the hub holds it (`moat fw key generate`); NULL for keys kept offline (imgtool).
CREATE TABLE firmware_keys (
    name        TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    spki_der    BLOB    NOT NULL,
    key_ref     TEXT,
    created_at  INTEGER NOT NULL
);

-- Published images. The bytes live in the data dir under firmware/<digest> (SHA-256 of the
-- whole file, lowercase hex), shared by rows of several models.
CREATE TABLE firmware (
    id                TEXT    NOT NULL PRIMARY KEY,
    model             TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    security_counter  INTEGER NOT NULL,
    size              INTEGER NOT NULL,
    digest            TEXT    NOT NULL,
    key_name          TEXT    NOT NULL REFERENCES firmware_keys (name),
    created_at        INTEGER NOT NULL,
    UNIQUE (model, digest)
);
CREATE INDEX firmware_model_counter ON firmware (model, security_counter);
CREATE INDEX firmware_digest ON firmware (digest);

CREATE TABLE campaigns (
    id                 TEXT    NOT NULL PRIMARY KEY,
    firmware_id        TEXT    NOT NULL REFERENCES firmware (id),
    target             TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    waves              INTEGER NOT NULL,
    current_wave       INTEGER NOT NULL,
    success_threshold  INTEGER NOT NULL,
    abort_threshold    INTEGER NOT NULL,
    reason             TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- No foreign key to devices: a deleted device's row stays (as skipped) for the record.
CREATE TABLE campaign_devices (
    campaign_id  TEXT    NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    device_id    TEXT    NOT NULL,
    wave         INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    reason       TEXT,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX campaign_devices_device ON campaign_devices (device_id);

CREATE TABLE ota_inventory (
    device_id         TEXT    NOT NULL PRIMARY KEY,
    model             TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    security_counter  INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX ota_inventory_model ON ota_inventory (model);
