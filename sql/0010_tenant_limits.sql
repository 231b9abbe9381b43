-- Limits on what a business can grow (docs/security.md). The API enforces them from now on; this brings rows
-- stored before them within bounds. (0008 and 0009 are left to the sign-in work landing beside this.)

-- event_types: each type once (the API took 10,000 copies of one type). The first occurrence keeps its place.
UPDATE endpoints e
SET event_types = ARRAY(SELECT t FROM unnest(e.event_types) WITH ORDINALITY AS u(t, n) GROUP BY t ORDER BY min(n))
WHERE event_types IS NOT NULL
  AND cardinality(event_types) > (SELECT count(DISTINCT t) FROM unnest(e.event_types) AS u(t));

-- At most 3 secrets (KAIHOOKS_MAX_LIVE_SECRETS_PER_ENDPOINT's default) sign at once: the current one and the
-- two newest still in their grace period. Older ones still signing stop now (each was one more signature on
-- every webhook); their receivers have the newer secrets already.
UPDATE endpoint_secrets s SET expires_at = now()
FROM (
    SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY expires_at DESC NULLS FIRST, id DESC) AS rank
    FROM endpoint_secrets WHERE expires_at IS NULL OR expires_at > now()
) ranked
WHERE s.id = ranked.id AND ranked.rank > 3;
