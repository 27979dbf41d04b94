"""Payments: the refund client and the local Stripe-compatible gateway service.

- `refunds` — the only adapter that imports the official `stripe` SDK; the refund worker uses
  its `RefundClient` to move money, against Stripe itself or the local gateway.
- `gateway_store`, `gateway_app`, `gateway_server` — the local gateway: its own database, the
  Stripe wire format for the refund subset, and a loopback uvicorn server.

Nothing is imported here so that the worker does not pull in FastAPI or uvicorn.
"""
