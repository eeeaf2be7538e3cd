"""Protocol buffer definitions (gRPC) shared by the mentoring stage."""
