-- Device lifecycle and ownership (issue 4), and certificate rotation overlap.

-- How far a device got through commissioning: 'enrolled' (it has an identity), then
-- 'provisioned' (field provisioning assigned it), then 'active' (its first accepted MQTT
-- CONNECT). Suspension and decommissioning are the device's `state` (disabled, revoked);
-- the lifecycle shown to people combines both. Existing devices start as 'enrolled' and
-- become 'active' at their next CONNECT.
ALTER TABLE devices ADD COLUMN stage TEXT NOT NULL DEFAULT 'enrolled';
-- The organisation that owns the device (`moat device claim`), NULL while unclaimed.
ALTER TABLE devices ADD COLUMN owner TEXT;
-- Why the device is suspended or decommissioned (the admin's text), NULL otherwise.
ALTER TABLE devices ADD COLUMN status_reason TEXT;
CREATE INDEX devices_owner ON devices (owner, id) WHERE owner IS NOT NULL;

-- When a newer certificate superseded this one: the end of its overlap. The hub revokes it
-- (reason superseded) then, and refuses it from then on even before that sweep has run.
ALTER TABLE certificates ADD COLUMN retire_at INTEGER;
-- Partial: only certificates waiting to retire, which the sweep reads.
CREATE INDEX certificates_retiring ON certificates (retire_at)
    WHERE retire_at IS NOT NULL AND revoked_at IS NULL;

-- A decommissioned device's serial: it can never enroll again (no reset).
ALTER TABLE allowlist ADD COLUMN retired_at INTEGER;
