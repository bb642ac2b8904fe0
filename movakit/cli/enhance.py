"""Placeholder: replaced by the module that implements `mova enhance`."""


def register(subparsers) -> None:  # noqa: ARG001
    pass
