-- Gateways: identities (kind 'gateway' in identity_access) that relay signed messages of
-- devices without IP (COSE_Sign1, moat-cose) to the hub.
--
-- gateway_allowances: which devices a gateway may relay for: one device, every device of an
-- MQTT group (identity_access.group_name), or every device an enrollment group provisioned
-- (device_assignments.enrollment_group). Names are not foreign keys: a group exists only as
-- its members' column, and an allowance may be given before the device is created.
CREATE TABLE gateway_allowances (
    gateway     TEXT   NOT NULL,
    -- 'device', 'group' or 'enrollment_group'.
    kind        TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (gateway, kind, name)
);

-- relay_windows: the replay window of each device's relayed messages (moat-cose's
-- ReplayWindow state, 18 bytes), written before a message is accepted so that a replay is
-- refused after a restart too. version: compare-and-set between nodes and tasks.
CREATE TABLE relay_windows (
    device_id   TEXT   NOT NULL PRIMARY KEY,
    state       BLOB   NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
