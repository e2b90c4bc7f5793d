"""Hardware in the loop: serial boards (real or virtual), flashing, bench runs."""
