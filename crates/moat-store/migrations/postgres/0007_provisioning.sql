-- Field provisioning: enrollment groups (which devices get which hub, policy, group and ACL
-- policy) and each provisioned device's hub assignment.

-- Matches devices whose provisioning certificate was issued by `ca_name` and/or whose
-- factory model is `model` (NULL matches any; the most specific group wins, then the name).
-- `allocation`: 'fixed' (the hub `hub`, or the first configured hub) or 'hashed' (a stable
-- hash of the device id over the configured hubs).
CREATE TABLE enrollment_groups (
    name          TEXT    NOT NULL PRIMARY KEY,
    ca_name       TEXT,
    model         TEXT,
    allocation    TEXT    NOT NULL,
    hub           TEXT,
    policy        TEXT    NOT NULL,
    mqtt_group    TEXT,
    acl_policy    TEXT,
    created_at    BIGINT NOT NULL
);

-- Where a device was last provisioned to. Deleted with the device.
CREATE TABLE device_assignments (
    device_id         TEXT    NOT NULL PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    hub               TEXT    NOT NULL,
    enrollment_group  TEXT,
    provisioned_at    BIGINT NOT NULL,
    provisions        BIGINT NOT NULL
);
