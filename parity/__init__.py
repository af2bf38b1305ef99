"""Parity: hour-by-hour proof that a WebSocket event stream reached Supabase whole.

Layers: :mod:`parity.core` (pure), :mod:`parity.io` (adapters), :mod:`parity.producer`
(the SDK), :mod:`parity.app` (command line and demo). The data contract is docs/contract.md.
"""
