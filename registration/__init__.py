"""Registration and tracking: frames, fiducials, point/surface registration, markers."""
