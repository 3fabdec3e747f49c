"""Thin routers: parse, call a service, return. Errors are raised, never caught, here."""
