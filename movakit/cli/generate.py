"""Placeholder: replaced by the module that implements `mova generate`."""


def register(subparsers) -> None:  # noqa: ARG001
    pass
