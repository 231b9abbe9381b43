-- A circuit breaker that trips pauses its endpoint for every worker: deliveries to it are not due before
-- paused_until (fan-out makes them due then; pending ones are moved there), so the claims of the healthy
-- endpoints' deliveries never wade through them. A success, a URL change or enabling clears it.
ALTER TABLE endpoints ADD COLUMN paused_until timestamptz;
