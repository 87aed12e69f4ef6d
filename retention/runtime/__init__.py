"""Side effects of the process itself: secrets, logging (and later systemd notify, metrics)."""
