"""Liftoff's CrossGuard policy pack: one module per concern, assembled in __main__."""
