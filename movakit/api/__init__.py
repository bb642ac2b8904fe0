"""Generated protobuf API packages (see proto/)."""
