"""Every Redis key the project uses, with its lifetime. Redis keeps nothing we cannot lose."""

PREFIX = "kaihooks:"

# A random value created on first use. If Redis restarts empty it changes, and every
# API process then drops its cache of API keys. Lives until Redis loses it.
KEY_EPOCH = PREFIX + "key-epoch"
# Set before an API key is deleted; cached copies are refused while it exists.
# Lives REVOKED_TTL_S, far longer than an API process caches a key.
KEY_REVOKED = PREFIX + "key-revoked:{key_id}"
REVOKED_TTL_S = 600
# GCRA "theoretical arrival time" (microseconds) of the per-key rate limit.
# Expires once the key has been idle long enough to have its full burst back.
KEY_RATE = PREFIX + "key-rate:{key_id}"
# Present while the key's last_used_at was stamped in the last minute (TTL = the interval).
KEY_TOUCHED = PREFIX + "key-touched:{key_id}"
# Sign-in attempts counted per email (hashed) and per client address (an IPv6 client's /64), before the
# password is checked (shared.login_throttle); they expire with the window that the first one started.
LOGIN_FAILURES_EMAIL = PREFIX + "login-failures:email:{digest}"
LOGIN_FAILURES_IP = PREFIX + "login-failures:ip:{ip}"
# GCRA theoretical arrival time (microseconds) of a dashboard session's rate limit, by the session's public
# id (ses_…). Expires once the session has been idle long enough to have its full burst back.
SESSION_RATE = PREFIX + "session-rate:{session_id}"
# A counter bumped after every accepted batch of a business's events: a read page cached at one
# version is served until the counter moves. Lives until Redis loses it (the epoch then changes too).
DATA_VERSION = PREFIX + "data-version:{business_id}"
