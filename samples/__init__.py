"""Sample data: a deterministic head CT phantom written as a real DICOM series."""
