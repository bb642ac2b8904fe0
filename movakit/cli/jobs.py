"""Placeholder: replaced by the module that implements `mova jobs`."""


def register(subparsers) -> None:  # noqa: ARG001
    pass
