"""Deferred work: callback jobs, their status store, webhook delivery and the address guard.
"""
