"""Liftoff's CrossGuard policy pack: one module per concern, assembled in __main__.

Rules read properties as the analyzer delivers them (policies.common); offline evaluation and the
tests run them through the pack's own gRPC analyzer server (tools/policy_check.py).
"""
