"""The aiohttp application: routes, authentication, request and response models."""
