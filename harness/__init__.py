"""ESP32 claim simulator and device-fleet harness for the teddy claim protocol."""

__version__ = "0.1.0"
