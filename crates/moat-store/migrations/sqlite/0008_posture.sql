-- The security posture audit reads audit entries of one action over a recent window (e.g.
-- possible clones of the last 30 days) without scanning the whole log.
CREATE INDEX audit_log_action_at ON audit_log (action, at);
