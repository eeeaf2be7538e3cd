"""Remote mentoring: live video over WebRTC, annotations and poses over gRPC."""
