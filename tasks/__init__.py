"""Prefect tasks: thin wrappers, a few lines each, over one core call (``candleflow``).

Retries and timeouts are declared on the decorators of I/O tasks only; tasks that take frames use
``cache_policy=NO_CACHE`` so Prefect never hashes large inputs.
"""
