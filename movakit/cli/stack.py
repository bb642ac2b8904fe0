"""Placeholder: replaced by the module that implements `mova stack`."""


def register(subparsers) -> None:  # noqa: ARG001
    pass
