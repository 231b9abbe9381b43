"""The dashboard: static pages and one script that sign a person in and manage API keys and webhooks
through the public /v1 API with the session cookie. No build step, nothing loaded from elsewhere."""
