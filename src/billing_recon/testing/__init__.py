"""Test doubles that speak real wire protocols (excluded from the wheel: never shipped).

``chat_server``: a loopback OpenAI-compatible chat-completions server, scripted per test.
``gateway_faults``: the local gateway's fault injection (``--faults``), for the chaos suite.
"""
