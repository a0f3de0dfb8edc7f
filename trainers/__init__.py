"""The per-trial training recipe run by every Ray Train worker, and what launches it."""
