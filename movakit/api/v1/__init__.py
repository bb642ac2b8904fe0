"""movakit.api.v1: stubs generated from proto/movakit/api/v1/ by scripts/gen_proto.sh (never hand-edited)."""
