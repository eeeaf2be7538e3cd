"""AR overlay: registered models rendered into camera and headset views."""
