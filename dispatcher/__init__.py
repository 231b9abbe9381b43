"""The arq worker: fan-out, signing, delivery, retries and sweepers."""
